//! Plausible power profiles per DER type, in kW (positive is consumption, negative
//! is export). Deterministic in the DER and the instant, with a little noise, so a
//! backfill and a live run agree and no meter looks frozen.

use std::f64::consts::PI;

use chrono::{DateTime, Timelike, Utc};
use uuid::Uuid;

/// What a DER does on its own, before any command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SolarPv,
    Battery,
    EvCharger,
    Thermostat,
    WaterHeater,
    CiLoad,
}

impl Kind {
    pub fn parse(der_type: &str) -> Self {
        match der_type {
            "solar_pv" => Kind::SolarPv,
            "battery" => Kind::Battery,
            "ev_charger" => Kind::EvCharger,
            "thermostat" => Kind::Thermostat,
            "water_heater" => Kind::WaterHeater,
            _ => Kind::CiLoad,
        }
    }
}

/// A stable pseudo-random number in [0, 1) from a DER and a counter (splitmix64).
fn unit(der: Uuid, n: u64) -> f64 {
    let mut z = (der.as_u128() as u64)
        ^ (der.as_u128() >> 64) as u64
        ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Hours since local midnight, taking the DER's longitude as roughly UTC-5 (the
/// demo fleet's time zone), so evening peaks fall in the evening.
fn local_hour(ts: DateTime<Utc>) -> f64 {
    let h = f64::from(ts.hour()) + f64::from(ts.minute()) / 60.0 + f64::from(ts.second()) / 3600.0;
    (h - 5.0).rem_euclid(24.0)
}

/// Power of one DER at an instant.
pub fn power_kw(kind: Kind, der: Uuid, nameplate_kw: f64, ts: DateTime<Utc>) -> f64 {
    let hour = local_hour(ts);
    let day = (ts.timestamp() / 86_400) as u64;
    let minute = (ts.timestamp() / 60) as u64;
    // ±2% jitter per reading, so no value repeats exactly while the DER runs.
    let jitter = 1.0 + (unit(der, ts.timestamp_micros() as u64) - 0.5) * 0.04;
    let p = match kind {
        Kind::SolarPv => {
            let sun = ((hour - 6.0) / 13.0 * PI).sin().max(0.0);
            let clouds = 0.6 + 0.4 * unit(der, day);
            -nameplate_kw * 0.85 * sun * clouds
        }
        Kind::Battery => {
            // Charge from the midday sun, discharge into the evening peak.
            if (10.0..15.0).contains(&hour) {
                nameplate_kw * 0.6
            } else if (17.0..21.0).contains(&hour) {
                -nameplate_kw * 0.7
            } else {
                0.0
            }
        }
        Kind::EvCharger => {
            // One session an evening, starting between 17:00 and 20:00, 2–4 hours.
            let start = 17.0 + 3.0 * unit(der, day * 2);
            let length = 2.0 + 2.0 * unit(der, day * 2 + 1);
            if hour >= start && hour < start + length {
                nameplate_kw * 0.95
            } else {
                0.0
            }
        }
        Kind::Thermostat => {
            // Compressor cycling: on for part of each 20-minute cycle, more in the afternoon.
            let duty = 0.3 + 0.4 * ((hour - 9.0) / 12.0 * PI).sin().max(0.0);
            let phase = ((minute + (unit(der, 7) * 20.0) as u64) % 20) as f64 / 20.0;
            if phase < duty {
                nameplate_kw * 0.9
            } else {
                0.05
            }
        }
        Kind::WaterHeater => {
            let morning = (6.0..8.0).contains(&hour);
            let evening = (18.0..20.5).contains(&hour);
            if morning || evening {
                nameplate_kw * 0.9
            } else {
                0.02 * nameplate_kw
            }
        }
        Kind::CiLoad => {
            let business = (7.0..19.0).contains(&hour);
            nameplate_kw * if business { 0.7 } else { 0.3 }
        }
    };
    if p == 0.0 { 0.0 } else { p * jitter }
}

/// A battery's state of charge follows its schedule: full after the midday charge,
/// drained by the evening peak.
pub fn soc_pct(kind: Kind, ts: DateTime<Utc>) -> Option<f32> {
    if kind != Kind::Battery {
        return None;
    }
    let hour = local_hour(ts);
    let soc = if hour < 10.0 {
        30.0
    } else if hour < 15.0 {
        30.0 + (hour - 10.0) / 5.0 * 65.0
    } else if hour < 17.0 {
        95.0
    } else if hour < 21.0 {
        95.0 - (hour - 17.0) / 4.0 * 65.0
    } else {
        30.0
    };
    Some(soc as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32) -> DateTime<Utc> {
        // 12:00 local is 17:00 UTC.
        DateTime::from_timestamp(
            1_750_000_000 - 1_750_000_000 % 86_400 + i64::from(h) * 3600,
            0,
        )
        .unwrap_or_default()
    }

    #[test]
    fn solar_exports_by_day_and_is_idle_at_night() {
        let der = Uuid::now_v7();
        assert!(power_kw(Kind::SolarPv, der, 6.0, at(17)) < -1.0);
        assert_eq!(power_kw(Kind::SolarPv, der, 6.0, at(7)), 0.0);
    }

    #[test]
    fn profiles_stay_within_nameplate() {
        let der = Uuid::now_v7();
        for kind in [
            Kind::SolarPv,
            Kind::Battery,
            Kind::EvCharger,
            Kind::Thermostat,
            Kind::WaterHeater,
            Kind::CiLoad,
        ] {
            for s in (0..86_400).step_by(97) {
                let ts = at(0) + chrono::Duration::seconds(s);
                let p = power_kw(kind, der, 10.0, ts);
                assert!(p.abs() <= 10.0, "{kind:?} at {ts}: {p}");
            }
        }
    }
}
