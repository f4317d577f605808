//! Baseline accuracy on placebo days (non-event days treated as if they had an
//! event), as AEMO and CAISO compare methods:
//! - error per interval = baseline − actual;
//! - relative RMSE = √(mean(error²)) / mean(actual);
//! - bias = mean(error) / mean(actual) (positive: the method over-estimates, which
//!   over-pays).

use serde::Serialize;

use crate::baseline::{BaselineMethod, Input};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    pub intervals: usize,
    pub relative_rmse: f64,
    pub bias: f64,
}

/// `pairs` are `(baseline_kw, actual_kw)` per interval; `None` without intervals or
/// when the mean actual load is zero (relative errors are undefined).
pub fn accuracy(pairs: impl IntoIterator<Item = (f64, f64)>) -> Option<Accuracy> {
    let (mut n, mut sum_actual, mut sum_err, mut sum_sq) = (0usize, 0.0, 0.0, 0.0);
    for (baseline, actual) in pairs {
        let err = baseline - actual;
        n += 1;
        sum_actual += actual;
        sum_err += err;
        sum_sq += err * err;
    }
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let mean_actual = sum_actual / nf;
    if mean_actual.abs() < 1e-12 {
        return None;
    }
    Some(Accuracy {
        intervals: n,
        relative_rmse: (sum_sq / nf).sqrt() / mean_actual.abs(),
        bias: (sum_err / nf) / mean_actual.abs(),
    })
}

/// `(interval start, baseline_kw, actual_kw)` for each interval of a placebo event
/// (`input.event` on a day without one) that has a reading; `None` when the method
/// has insufficient data for that day.
pub fn placebo_pairs(
    method: &dyn BaselineMethod,
    input: &Input<'_>,
) -> Option<Vec<(chrono::DateTime<chrono::Utc>, f64, f64)>> {
    let baseline = method.baseline(input).ok()?;
    Some(
        baseline
            .points
            .iter()
            .filter_map(|p| {
                input
                    .series
                    .get(p.start)
                    .map(|actual| (p.start, p.kw, actual))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked() {
        // errors 1, −1, 2, 0 over actuals 4, 6, 4, 6 (mean 5):
        // RMSE = √((1 + 1 + 4 + 0) / 4) = √1.5; bias = (2 / 4) / 5 = 0.1.
        let a =
            accuracy([(5.0, 4.0), (5.0, 6.0), (6.0, 4.0), (6.0, 6.0)]).expect("valid test input");
        assert_eq!(a.intervals, 4);
        assert!((a.relative_rmse - 1.5f64.sqrt() / 5.0).abs() < 1e-12);
        assert!((a.bias - 0.1).abs() < 1e-12);
        assert!(accuracy([]).is_none());
        assert!(accuracy([(1.0, 0.0)]).is_none());
    }
}
