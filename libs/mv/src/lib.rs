//! Measurement and verification for dispatch events: baselines, delivered load,
//! performance factors, settlement amounts and baseline accuracy.
//!
//! Pure: series and parameters in, results out. No I/O, no database, no clock, so
//! every rule is checked on series small enough to verify by hand; the worker wraps
//! it with the database, Kafka and S3. Load (kW) is `f64`; money is
//! [`rust_decimal::Decimal`].

pub mod accuracy;
pub mod baseline;
pub mod calendar;
pub mod performance;
pub mod series;
pub mod settlement;

#[cfg(test)]
pub(crate) mod test_support {
    use chrono::{DateTime, Utc};

    pub(crate) fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("valid test input")
    }
}
