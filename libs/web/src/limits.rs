//! Per-client rate limits (GCRA via `governor`), answering 429 with `Retry-After`.

use std::num::NonZeroU32;

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::error::ApiError;

#[derive(Debug)]
pub struct Limits {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl Limits {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from `key`'s budget.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| {
                metrics::counter!("pmcore_api_rate_limited_total").increment(1);
                ApiError::RateLimited {
                    retry_after_secs: not_until.wait_time_from(self.clock.now()).as_secs().max(1),
                }
            })
    }

    /// Forgets keys idle long enough to have a full budget again.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }

    /// Forgets idle keys every minute until cancelled: every source address that
    /// sent one refused request is a key, and they must not pile up.
    pub async fn forget_idle_until(
        self: std::sync::Arc<Self>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(60)) => self.forget_idle(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_budget_is_told_when_to_retry_and_others_are_not_affected() {
        let limits = Limits::new(1, 2);
        assert!(limits.check("a").is_ok());
        assert!(limits.check("a").is_ok());
        match limits.check("a") {
            Err(ApiError::RateLimited { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limits.check("b").is_ok());
    }
}
