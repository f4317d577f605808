//! Settlement: what each DER (and so each organization) is paid for one event, in
//! exact decimal dollars.
//!
//! Per DER that has a baseline (a DER with insufficient data is paid nothing and
//! listed as such):
//! - capacity = capacity rate ($/kW-month) × committed kW × performance factor
//!   ÷ events per month (the program's proration: each event earns that share of
//!   a month's capacity payment);
//! - energy = energy rate ($/kWh) × max(delivered kWh, 0);
//! - penalty = penalty rate ($/kWh) × shortfall kWh, shortfall = max(committed kW ×
//!   event hours − delivered kWh, 0);
//! - total = capacity + energy − penalty (may be negative).
//!
//! Rounding, stated once: measured quantities enter as kWh rounded to 3 decimals
//! (watt-hours) and a performance factor rounded to 4 decimals; each payment line
//! is rounded to cents, half to even; an organization's amounts are the sums of its
//! DERs' rounded lines, so statements add up to the cent.

use rust_decimal::{Decimal, RoundingStrategy, prelude::FromPrimitive};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub capacity_per_kw_month: Decimal,
    pub energy_per_kwh: Decimal,
    pub penalty_per_kwh: Decimal,
    /// Each event earns 1 / `events_per_month` of a month's capacity payment.
    pub events_per_month: u32,
}

/// One DER's measured result, as settlement reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measured {
    pub committed_kw: Decimal,
    pub event_hours: Decimal,
    pub delivered_kwh: Decimal,
    pub performance_factor: Decimal,
}

impl Measured {
    /// Rounds float measurements the one documented way.
    pub fn from_floats(
        committed_kw: Decimal,
        event_hours: f64,
        delivered_kwh: f64,
        performance_factor: f64,
    ) -> Self {
        Self {
            committed_kw,
            event_hours: dec(event_hours, 6),
            delivered_kwh: dec(delivered_kwh, 3),
            performance_factor: dec(performance_factor, 4),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Payment {
    pub capacity: Decimal,
    pub energy: Decimal,
    pub penalty: Decimal,
    pub total: Decimal,
}

impl std::ops::Add for Payment {
    type Output = Payment;
    fn add(self, o: Payment) -> Payment {
        Payment {
            capacity: self.capacity + o.capacity,
            energy: self.energy + o.energy,
            penalty: self.penalty + o.penalty,
            total: self.total + o.total,
        }
    }
}

pub fn settle(rates: &Rates, m: &Measured) -> Payment {
    let events = Decimal::from(rates.events_per_month.max(1));
    let capacity =
        cents(rates.capacity_per_kw_month * m.committed_kw * m.performance_factor / events);
    let energy = cents(rates.energy_per_kwh * m.delivered_kwh.max(Decimal::ZERO));
    let shortfall = (m.committed_kw * m.event_hours - m.delivered_kwh).max(Decimal::ZERO);
    let penalty = cents(rates.penalty_per_kwh * shortfall);
    Payment {
        capacity,
        energy,
        penalty,
        total: capacity + energy - penalty,
    }
}

pub fn cents(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
}

/// A float measurement as a decimal rounded to `dp` places, half to even;
/// non-finite values become zero.
pub fn dec(value: f64, dp: u32) -> Decimal {
    Decimal::from_f64(value)
        .unwrap_or_default()
        .round_dp_with_strategy(dp, RoundingStrategy::MidpointNearestEven)
}
