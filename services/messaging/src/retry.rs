//! When a failed delivery is tried again, and when an endpoint is given up on.
//! Pure: the caller passes the time.

use chrono::{DateTime, Duration, Utc};

/// Waits before each attempt: the first goes at once, the last about 33 hours after
/// the first (the schedule Svix publishes and the Standard Webhooks spec suggests).
pub const SCHEDULE: [Duration; 8] = [
    Duration::zero(),
    Duration::seconds(5),
    Duration::minutes(5),
    Duration::minutes(30),
    Duration::hours(2),
    Duration::hours(5),
    Duration::hours(10),
    Duration::hours(10),
];

/// The longest `Retry-After` honoured: a receiver cannot park a message for a week.
pub const MAX_RETRY_AFTER: Duration = Duration::hours(24);

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// After `attempts` attempts (counting the one that just failed at `now`): the next
/// attempt's time, no earlier than the receiver's `Retry-After`, or give up.
pub fn after_failure(attempts: u32, now: DateTime<Utc>, retry_after: Option<Duration>) -> Next {
    let Some(wait) = SCHEDULE.get(attempts as usize) else {
        return Next::GiveUp;
    };
    let asked = retry_after
        .unwrap_or_else(Duration::zero)
        .clamp(Duration::zero(), MAX_RETRY_AFTER);
    Next::RetryAt(now + (*wait).max(asked))
}

/// Whether an endpoint that has failed every attempt since `failing_since` has failed
/// for long enough to be disabled.
pub fn should_disable(
    failing_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    disable_after: Duration,
) -> bool {
    failing_since.is_some_and(|since| now - since >= disable_after)
}

/// Reads a `Retry-After` header: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u32>() {
        return Some(Duration::seconds(i64::from(seconds)));
    }
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|at| (at.with_timezone(&Utc) - now).max(Duration::zero()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn the_schedule_by_hand() {
        let now = t0();
        assert_eq!(
            after_failure(1, now, None),
            Next::RetryAt(now + Duration::seconds(5))
        );
        assert_eq!(
            after_failure(2, now, None),
            Next::RetryAt(now + Duration::minutes(5))
        );
        assert_eq!(
            after_failure(7, now, None),
            Next::RetryAt(now + Duration::hours(10))
        );
        assert_eq!(after_failure(8, now, None), Next::GiveUp);
        let total: Duration = SCHEDULE.iter().copied().sum();
        assert_eq!(
            total,
            Duration::seconds(5 + 300 + 1800 + 7200 + 18000 + 72000)
        );
    }

    #[test]
    fn retry_after_delays_but_never_hastens_or_parks() {
        let now = t0();
        assert_eq!(
            after_failure(1, now, Some(Duration::seconds(60))),
            Next::RetryAt(now + Duration::seconds(60))
        );
        assert_eq!(
            after_failure(3, now, Some(Duration::seconds(1))),
            Next::RetryAt(now + Duration::minutes(30))
        );
        assert_eq!(
            after_failure(1, now, Some(Duration::days(30))),
            Next::RetryAt(now + MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_header_forms() {
        let now = t0();
        assert_eq!(parse_retry_after("120", now), Some(Duration::seconds(120)));
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 10:01:00 GMT", now),
            Some(Duration::seconds(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 09:00:00 GMT", now),
            Some(Duration::zero())
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn disabling_after_the_period() {
        let now = t0();
        let five_days = Duration::days(5);
        assert!(!should_disable(None, now, five_days));
        assert!(!should_disable(
            Some(now - Duration::days(4)),
            now,
            five_days
        ));
        assert!(should_disable(Some(now - five_days), now, five_days));
    }

    proptest! {
        #[test]
        fn waits_never_shrink_and_end(attempts in 1u32..20, retry_after in proptest::option::of(0i64..200_000)) {
            let now = t0();
            let asked = retry_after.map(Duration::seconds);
            match after_failure(attempts, now, asked) {
                Next::RetryAt(at) => {
                    prop_assert!(attempts < SCHEDULE.len() as u32);
                    prop_assert!(at >= now + SCHEDULE[attempts as usize]);
                    prop_assert!(at <= now + SCHEDULE[attempts as usize].max(MAX_RETRY_AFTER));
                    if let Next::RetryAt(earlier) = after_failure(attempts, now, None) {
                        prop_assert!(at >= earlier);
                    }
                }
                Next::GiveUp => prop_assert!(attempts >= SCHEDULE.len() as u32),
            }
        }
    }
}
