//! Programs on the wire (`ProgramIn`, `ProgramPatch`, `ProgramOut`) and their rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

/// `as_str` and `FromStr` for an enum whose wire names are spelled out once here.
/// The enum itself is declared plainly so serde and utoipa read the same names.
macro_rules! wire_names {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> anyhow::Result<Self> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => anyhow::bail!("unexpected {} `{other}` in the database", stringify!($name)),
                }
            }
        }
    };
}

/// What the program buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProgramKind {
    DemandResponse,
    Capacity,
    Flexibility,
}
wire_names!(ProgramKind { DemandResponse => "demand_response", Capacity => "capacity", Flexibility => "flexibility" });

/// `draft → open → active → closed`; only a draft may be edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProgramStatus {
    Draft,
    Open,
    Active,
    Closed,
}
wire_names!(ProgramStatus { Draft => "draft", Open => "open", Active => "active", Closed => "closed" });

/// How a DER's counterfactual load is estimated: the average of the 10 most recent
/// like days (CAISO 10-in-10), the highest 4 of the last 5 (PJM), the highest 5 of
/// 10 (NYISO), the middle 8 of 10 (ERCOT), or the meter just before the event. See
/// `docs/settlement.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum BaselineMethod {
    #[serde(rename = "x_of_y_10_10")]
    XOfY10In10,
    #[serde(rename = "x_of_y_high_4_5")]
    XOfYHigh4Of5,
    #[serde(rename = "x_of_y_high_5_10")]
    XOfYHigh5Of10,
    #[serde(rename = "x_of_y_middle_8_10")]
    XOfYMiddle8Of10,
    #[serde(rename = "meter_before_after")]
    MeterBeforeAfter,
}
wire_names!(BaselineMethod {
    XOfY10In10 => "x_of_y_10_10",
    XOfYHigh4Of5 => "x_of_y_high_4_5",
    XOfYHigh5Of10 => "x_of_y_high_5_10",
    XOfYMiddle8Of10 => "x_of_y_middle_8_10",
    MeterBeforeAfter => "meter_before_after",
});

/// How events of the program are measured and paid (all optional on input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SettlementRules {
    /// Overrides of the baseline method's parameters, e.g.
    /// `{"weekday": {"adjustment": {"kind": "none"}}}` (see `docs/settlement.md`).
    #[schema(value_type = Object)]
    pub baseline_params: serde_json::Value,
    /// Measurement interval: 1, 5, 15, 30 or 60 minutes (1 for fast resources).
    pub interval_minutes: i32,
    /// Days that count as holidays (weekend-like) for comparison days.
    pub holidays: Holidays,
    /// Non-performance penalty in cents per kWh short of committed kW × event hours.
    pub penalty_rate_cents_kwh: i64,
    /// Each event earns 1 / this of a month's capacity payment.
    pub capacity_events_per_month: i32,
    /// The readings events are measured on: the gateways' telemetry, or the utility's
    /// interval meter data imported as `meter_data` files.
    pub data_source: DataSource,
}

impl Default for SettlementRules {
    fn default() -> Self {
        Self {
            baseline_params: serde_json::json!({}),
            interval_minutes: 15,
            holidays: Holidays::default(),
            penalty_rate_cents_kwh: 0,
            capacity_events_per_month: 4,
            data_source: DataSource::Telemetry,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    #[default]
    Telemetry,
    Meter,
}

impl DataSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Telemetry => "telemetry",
            Self::Meter => "meter",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "telemetry" => Ok(Self::Telemetry),
            "meter" => Ok(Self::Meter),
            other => anyhow::bail!("unexpected settlement data source `{other}`"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Holidays {
    /// NERC's six holidays (New Year's, Memorial Day, Independence Day, Labor Day,
    /// Thanksgiving, Christmas; Sunday ones observed on Monday).
    pub nerc: bool,
    /// Further local dates.
    pub extra: Vec<chrono::NaiveDate>,
}

impl Default for Holidays {
    fn default() -> Self {
        Self {
            nerc: true,
            extra: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DerType {
    SolarPv,
    Battery,
    EvCharger,
    Thermostat,
    WaterHeater,
    CiLoad,
}
wire_names!(DerType {
    SolarPv => "solar_pv",
    Battery => "battery",
    EvCharger => "ev_charger",
    Thermostat => "thermostat",
    WaterHeater => "water_heater",
    CiLoad => "ci_load",
});

/// Which DERs may enroll. Empty lists mean "any".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Eligibility {
    #[serde(default)]
    pub der_types: Vec<DerType>,
    #[serde(default)]
    pub min_nameplate_kw: f64,
    #[serde(default)]
    pub feeders: Vec<String>,
}

/// Limits on dispatch events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventLimits {
    pub max_events_per_season: i32,
    pub max_event_duration_minutes: i32,
    pub min_notice_minutes: i32,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgramIn {
    pub name: String,
    pub kind: ProgramKind,
    #[serde(default)]
    pub description: String,
    /// IANA time zone of the program's territory, e.g. `America/Los_Angeles`.
    pub time_zone: String,
    pub target_capacity_kw: f64,
    /// Capacity payment in cents per kW-month.
    pub capacity_rate_cents_kw_month: i64,
    /// Energy payment in cents per kWh.
    pub energy_rate_cents_kwh: i64,
    pub baseline_method: BaselineMethod,
    #[serde(default)]
    pub settlement: SettlementRules,
    pub eligibility: Eligibility,
    pub limits: EventLimits,
}

/// Changes to a draft program; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgramPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub time_zone: Option<String>,
    pub target_capacity_kw: Option<f64>,
    pub capacity_rate_cents_kw_month: Option<i64>,
    pub energy_rate_cents_kwh: Option<i64>,
    pub baseline_method: Option<BaselineMethod>,
    pub settlement: Option<SettlementRules>,
    pub eligibility: Option<Eligibility>,
    pub limits: Option<EventLimits>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProgramOut {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub kind: ProgramKind,
    pub status: ProgramStatus,
    pub description: String,
    pub time_zone: String,
    pub target_capacity_kw: f64,
    pub capacity_rate_cents_kw_month: i64,
    pub energy_rate_cents_kwh: i64,
    pub baseline_method: BaselineMethod,
    pub settlement: SettlementRules,
    pub eligibility: Eligibility,
    pub limits: EventLimits,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ProgramOut {
    /// Applies a patch, returning the names of the fields it changed.
    pub fn apply(&mut self, patch: ProgramPatch) -> Vec<&'static str> {
        let mut changed = Vec::new();
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = patch.$field {
                    if self.$field != v {
                        self.$field = v;
                        changed.push(stringify!($field));
                    }
                }
            };
        }
        set!(name);
        set!(description);
        set!(time_zone);
        set!(target_capacity_kw);
        set!(capacity_rate_cents_kw_month);
        set!(energy_rate_cents_kwh);
        set!(baseline_method);
        set!(settlement);
        set!(eligibility);
        set!(limits);
        changed
    }

    /// The rules every stored program satisfies.
    pub fn validate(&self) -> Result<(), ApiError> {
        let mut e = Vec::new();
        let name_len = self.name.trim().chars().count();
        if name_len == 0 || name_len > 200 {
            e.push(FieldError::new("/name", "must be 1 to 200 characters"));
        }
        if self.description.chars().count() > 5000 {
            e.push(FieldError::new("/description", "at most 5000 characters"));
        }
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            e.push(FieldError::new(
                "/time_zone",
                "must be an IANA time zone such as Europe/Berlin",
            ));
        }
        non_negative(&mut e, "/target_capacity_kw", self.target_capacity_kw);
        if self.capacity_rate_cents_kw_month < 0 {
            e.push(FieldError::new(
                "/capacity_rate_cents_kw_month",
                "must not be negative",
            ));
        }
        if self.energy_rate_cents_kwh < 0 {
            e.push(FieldError::new(
                "/energy_rate_cents_kwh",
                "must not be negative",
            ));
        }
        let r = &self.settlement;
        if let Err(err) =
            pmcore_mv::baseline::method(self.baseline_method.as_str(), &r.baseline_params)
        {
            e.push(FieldError::new(
                "/settlement/baseline_params",
                err.to_string(),
            ));
        }
        if ![5, 15, 30, 60].contains(&r.interval_minutes) {
            e.push(FieldError::new(
                "/settlement/interval_minutes",
                "must be 5, 15, 30 or 60",
            ));
        }
        if r.holidays.extra.len() > 1000 {
            e.push(FieldError::new(
                "/settlement/holidays/extra",
                "at most 1000 dates",
            ));
        }
        if r.penalty_rate_cents_kwh < 0 {
            e.push(FieldError::new(
                "/settlement/penalty_rate_cents_kwh",
                "must not be negative",
            ));
        }
        if !(1..=31).contains(&r.capacity_events_per_month) {
            e.push(FieldError::new(
                "/settlement/capacity_events_per_month",
                "must be 1 to 31",
            ));
        }
        non_negative(
            &mut e,
            "/eligibility/min_nameplate_kw",
            self.eligibility.min_nameplate_kw,
        );
        if self
            .eligibility
            .feeders
            .iter()
            .any(|f| f.trim().is_empty() || f.len() > 100)
        {
            e.push(FieldError::new(
                "/eligibility/feeders",
                "feeder names are 1 to 100 characters",
            ));
        }
        let l = &self.limits;
        if !(1..=1000).contains(&l.max_events_per_season) {
            e.push(FieldError::new(
                "/limits/max_events_per_season",
                "must be 1 to 1000",
            ));
        }
        if !(1..=24 * 60).contains(&l.max_event_duration_minutes) {
            e.push(FieldError::new(
                "/limits/max_event_duration_minutes",
                "must be 1 to 1440",
            ));
        }
        if !(0..=14 * 24 * 60).contains(&l.min_notice_minutes) {
            e.push(FieldError::new(
                "/limits/min_notice_minutes",
                "must be 0 to 20160 (14 days)",
            ));
        }
        if e.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(e))
        }
    }
}

fn non_negative(errors: &mut Vec<FieldError>, field: &str, value: f64) {
    if !value.is_finite() || !(0.0..=1e9).contains(&value) {
        errors.push(FieldError::new(field, "must be a number from 0 to 1e9"));
    }
}

impl ProgramIn {
    /// A new draft program of `organization_id`.
    pub fn into_program(self, organization_id: Uuid) -> ProgramOut {
        let now = Utc::now();
        ProgramOut {
            id: Uuid::now_v7(),
            organization_id,
            name: self.name.trim().to_owned(),
            kind: self.kind,
            status: ProgramStatus::Draft,
            description: self.description,
            time_zone: self.time_zone,
            target_capacity_kw: self.target_capacity_kw,
            capacity_rate_cents_kw_month: self.capacity_rate_cents_kw_month,
            energy_rate_cents_kwh: self.energy_rate_cents_kwh,
            baseline_method: self.baseline_method,
            settlement: self.settlement,
            eligibility: self.eligibility,
            limits: self.limits,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A status change a program manager asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Open,
    Activate,
    Close,
}

impl Transition {
    /// The status after the transition, or why it is not allowed from `from`.
    pub fn apply(self, from: ProgramStatus) -> Result<ProgramStatus, ApiError> {
        use ProgramStatus::*;
        match (self, from) {
            (Transition::Open, Draft) => Ok(Open),
            (Transition::Activate, Open) => Ok(Active),
            (Transition::Close, Open | Active) => Ok(Closed),
            (t, s) => Err(ApiError::Conflict(format!(
                "cannot {} a program that is {}",
                t.verb(),
                s.as_str()
            ))),
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Transition::Open => "open",
            Transition::Activate => "activate",
            Transition::Close => "close",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_the_serde_names() {
        for m in [
            BaselineMethod::XOfY10In10,
            BaselineMethod::XOfYHigh4Of5,
            BaselineMethod::MeterBeforeAfter,
        ] {
            assert_eq!(
                serde_json::to_value(m).ok(),
                Some(serde_json::Value::from(m.as_str()))
            );
        }
        for t in [DerType::SolarPv, DerType::EvCharger, DerType::CiLoad] {
            assert_eq!(
                serde_json::to_value(t).ok(),
                Some(serde_json::Value::from(t.as_str()))
            );
        }
    }

    #[test]
    fn the_status_machine_allows_only_its_edges() {
        use ProgramStatus::*;
        assert_eq!(Transition::Open.apply(Draft).ok(), Some(Open));
        assert_eq!(Transition::Activate.apply(Open).ok(), Some(Active));
        assert_eq!(Transition::Close.apply(Active).ok(), Some(Closed));
        assert_eq!(Transition::Close.apply(Open).ok(), Some(Closed));
        for (t, s) in [
            (Transition::Activate, Draft),
            (Transition::Open, Active),
            (Transition::Open, Closed),
            (Transition::Close, Draft),
            (Transition::Activate, Closed),
        ] {
            assert!(
                matches!(t.apply(s), Err(ApiError::Conflict(_))),
                "{t:?} from {s:?}"
            );
        }
    }
}
