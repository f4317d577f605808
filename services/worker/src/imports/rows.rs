//! One record of each file kind as a typed row, or the reasons it is not one. Pure:
//! the checks that need the database (does this DER exist, is it yours) come later.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::format::{Header, Record};

/// A rejected cell: where it is, what it held and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub column: String,
    pub value: String,
    pub message: String,
}

impl RowError {
    pub fn new(
        line: u64,
        column: &str,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            line,
            column: column.to_owned(),
            value: value.into(),
            message: message.into(),
        }
    }
}

pub const DER_TYPES: [&str; 6] = [
    "solar_pv",
    "battery",
    "ev_charger",
    "thermostat",
    "water_heater",
    "ci_load",
];

/// A line of a `ders` file.
#[derive(Debug, Clone, PartialEq)]
pub struct DerRow {
    pub line: u64,
    pub external_id: String,
    pub der_type: &'static str,
    pub nameplate_kw: f64,
    pub nameplate_kwh: Option<f64>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub feeder: Option<String>,
    pub substation: Option<String>,
    pub gateway_id: Option<Uuid>,
}

/// A line of an `enrollments` file.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentRow {
    pub line: u64,
    pub der_external_id: String,
    pub program_id: Uuid,
    pub committed_kw: f64,
}

/// How a meter-data line names its DER.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DerRef {
    ExternalId(String),
    Id(Uuid),
}

/// A line of a `meter_data` file: the energy over one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterRow {
    pub line: u64,
    pub der: DerRef,
    pub interval_start: DateTime<Utc>,
    pub interval_minutes: i32,
    pub energy_kwh: f64,
}

/// Interval lengths meter data may have, in minutes.
pub const INTERVAL_MINUTES: [i32; 4] = [5, 15, 30, 60];

/// Collects a record's errors while its cells are read.
struct Cells<'a> {
    header: &'a Header,
    record: &'a Record,
    errors: Vec<RowError>,
}

impl<'a> Cells<'a> {
    fn new(header: &'a Header, record: &'a Record) -> Self {
        Self {
            header,
            record,
            errors: Vec::new(),
        }
    }

    fn bad(&mut self, column: &str, value: &str, message: impl Into<String>) {
        self.errors
            .push(RowError::new(self.record.line, column, value, message));
    }

    fn text(&mut self, column: &str, max_chars: usize) -> Option<String> {
        let value = self.header.get(self.record, column)?;
        if value.chars().count() > max_chars {
            self.bad(column, value, format!("at most {max_chars} characters"));
            return None;
        }
        if value.chars().any(char::is_control) {
            self.bad(column, value, "holds a control character");
            return None;
        }
        Some(value.to_owned())
    }

    fn required_text(&mut self, column: &str, max_chars: usize) -> Option<String> {
        if self.header.get(self.record, column).is_none() {
            self.bad(column, "", "is required");
            return None;
        }
        self.text(column, max_chars)
    }

    /// A finite number in `(low, high]` (or `[low, high]` when `low_inclusive`).
    fn number(&mut self, column: &str, low: f64, low_inclusive: bool, high: f64) -> Option<f64> {
        let value = self.header.get(self.record, column)?;
        let in_range = |n: f64| (n > low || (low_inclusive && n == low)) && n <= high;
        match value.parse::<f64>() {
            Ok(n) if n.is_finite() && in_range(n) => Some(n),
            Ok(_) => {
                let from = if low_inclusive {
                    "at least"
                } else {
                    "more than"
                };
                self.bad(
                    column,
                    value,
                    format!("must be {from} {low} and at most {high}"),
                );
                None
            }
            Err(_) => {
                self.bad(column, value, "is not a number");
                None
            }
        }
    }

    fn required_number(&mut self, column: &str, low: f64, high: f64) -> Option<f64> {
        if self.header.get(self.record, column).is_none() {
            self.bad(column, "", "is required");
            return None;
        }
        self.number(column, low, false, high)
    }

    fn uuid(&mut self, column: &str) -> Option<Uuid> {
        let value = self.header.get(self.record, column)?;
        match Uuid::parse_str(value) {
            Ok(id) => Some(id),
            Err(_) => {
                self.bad(column, value, "is not a UUID");
                None
            }
        }
    }

    fn required_uuid(&mut self, column: &str) -> Option<Uuid> {
        if self.header.get(self.record, column).is_none() {
            self.bad(column, "", "is required");
            return None;
        }
        self.uuid(column)
    }

    fn finish<T>(self, row: Option<T>) -> Result<T, Vec<RowError>> {
        match row {
            Some(row) if self.errors.is_empty() => Ok(row),
            _ => Err(self.errors),
        }
    }
}

pub fn der(header: &Header, record: &Record) -> Result<DerRow, Vec<RowError>> {
    let mut c = Cells::new(header, record);
    let external_id = c.required_text("external_id", 100);
    let der_type = match header.get(record, "der_type") {
        None => {
            c.bad("der_type", "", "is required");
            None
        }
        Some(value) => {
            let found = DER_TYPES.into_iter().find(|t| *t == value);
            if found.is_none() {
                c.bad(
                    "der_type",
                    value,
                    format!("must be one of {}", DER_TYPES.join(", ")),
                );
            }
            found
        }
    };
    let nameplate_kw = c.required_number("nameplate_kw", 0.0, 1e6);
    let nameplate_kwh = c.number("nameplate_kwh", 0.0, false, 1e7);
    let latitude = c.number("latitude", -90.0, true, 90.0);
    let longitude = c.number("longitude", -180.0, true, 180.0);
    let feeder = c.text("feeder", 100);
    let substation = c.text("substation", 100);
    let gateway_id = c.uuid("gateway_id");
    let row = (|| {
        Some(DerRow {
            line: record.line,
            external_id: external_id?,
            der_type: der_type?,
            nameplate_kw: nameplate_kw?,
            nameplate_kwh,
            latitude,
            longitude,
            feeder,
            substation,
            gateway_id,
        })
    })();
    c.finish(row)
}

pub fn enrollment(header: &Header, record: &Record) -> Result<EnrollmentRow, Vec<RowError>> {
    let mut c = Cells::new(header, record);
    let der_external_id = c.required_text("der_external_id", 100);
    let program_id = c.required_uuid("program_id");
    let committed_kw = c.required_number("committed_kw", 0.0, 1e6);
    let row = (|| {
        Some(EnrollmentRow {
            line: record.line,
            der_external_id: der_external_id?,
            program_id: program_id?,
            committed_kw: committed_kw?,
        })
    })();
    c.finish(row)
}

pub fn meter(header: &Header, record: &Record) -> Result<MeterRow, Vec<RowError>> {
    let mut c = Cells::new(header, record);
    let der = if header.has("der_id") {
        c.required_uuid("der_id").map(DerRef::Id)
    } else {
        c.required_text("der_external_id", 100)
            .map(DerRef::ExternalId)
    };
    let interval_start = match header.get(record, "interval_start") {
        None => {
            c.bad("interval_start", "", "is required");
            None
        }
        Some(value) => match DateTime::parse_from_rfc3339(value) {
            Ok(t) if t.timestamp_subsec_nanos() == 0 && t.timestamp() % 60 == 0 => {
                Some(t.with_timezone(&Utc))
            }
            Ok(_) => {
                c.bad("interval_start", value, "must be a whole minute");
                None
            }
            Err(_) => {
                c.bad(
                    "interval_start",
                    value,
                    "is not an RFC 3339 time with an offset (e.g. 2026-07-01T17:00:00-05:00)",
                );
                None
            }
        },
    };
    let interval_minutes = match header.get(record, "interval_minutes") {
        None => {
            c.bad("interval_minutes", "", "is required");
            None
        }
        Some(value) => match value.parse::<i32>() {
            Ok(m) if INTERVAL_MINUTES.contains(&m) => Some(m),
            _ => {
                c.bad("interval_minutes", value, "must be 5, 15, 30 or 60");
                None
            }
        },
    };
    // Energy may be negative: a DER exporting to the grid.
    let energy_kwh = if header.has("kwh") {
        c.required_number("kwh", -1e6, 1e6)
    } else {
        c.required_number("kw", -1e6, 1e6)
            .zip(interval_minutes)
            .map(|(kw, minutes)| kw * f64::from(minutes) / 60.0)
    };
    let row = (|| {
        Some(MeterRow {
            line: record.line,
            der: der?,
            interval_start: interval_start?,
            interval_minutes: interval_minutes?,
            energy_kwh: energy_kwh?,
        })
    })();
    c.finish(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imports::format::{Kind, Records};

    fn first<T>(
        text: &str,
        kind: Kind,
        parse: fn(&Header, &Record) -> Result<T, Vec<RowError>>,
    ) -> Result<T, Vec<RowError>> {
        let mut records = Records::open(text.as_bytes(), kind, 1 << 20).expect("header");
        let record = records.next_record().expect("reads").expect("a record");
        parse(records.header(), &record)
    }

    fn columns(errors: &[RowError]) -> Vec<&str> {
        errors.iter().map(|e| e.column.as_str()).collect()
    }

    #[test]
    fn a_full_der_line_is_read() {
        let row = first(
            "external_id,der_type,nameplate_kw,nameplate_kwh,latitude,longitude,feeder,substation,gateway_id\n\
             m-1,battery,5,13.5,40.7,-74,F-1,S-1,0195f3a0-0000-7000-8000-000000000001\n",
            Kind::Ders,
            der,
        )
        .expect("valid");
        assert_eq!(row.der_type, "battery");
        assert_eq!(row.nameplate_kwh, Some(13.5));
        assert_eq!(row.longitude, Some(-74.0));
        assert!(row.gateway_id.is_some());
    }

    #[test]
    fn every_bad_cell_of_a_der_line_is_reported_not_only_the_first() {
        let errors = first(
            "external_id,der_type,nameplate_kw,latitude\n,boat,-1,91\n",
            Kind::Ders,
            der,
        )
        .expect_err("invalid");
        assert_eq!(
            columns(&errors),
            ["external_id", "der_type", "nameplate_kw", "latitude"]
        );
        assert!(errors.iter().all(|e| e.line == 2));
        assert_eq!(errors[1].value, "boat");
    }

    #[test]
    fn numbers_that_are_not_finite_are_refused() {
        for value in ["NaN", "inf", "-inf", "1e400", "5 kW"] {
            let errors = first(
                &format!("external_id,der_type,nameplate_kw\nm,battery,{value}\n"),
                Kind::Ders,
                der,
            )
            .expect_err("invalid");
            assert_eq!(columns(&errors), ["nameplate_kw"], "{value}");
        }
    }

    #[test]
    fn enrollment_lines_need_a_uuid_program_and_a_positive_commitment() {
        let errors = first(
            "der_external_id,program_id,committed_kw\nm-1,program-7,0\n",
            Kind::Enrollments,
            enrollment,
        )
        .expect_err("invalid");
        assert_eq!(columns(&errors), ["program_id", "committed_kw"]);
    }

    #[test]
    fn meter_power_becomes_energy_over_the_interval() {
        let row = first(
            "der_external_id,interval_start,interval_minutes,kw\nm-1,2026-07-01T17:00:00-05:00,15,4\n",
            Kind::MeterData,
            meter,
        )
        .expect("valid");
        assert_eq!(row.energy_kwh, 1.0);
        assert_eq!(row.interval_start.to_rfc3339(), "2026-07-01T22:00:00+00:00");
    }

    #[test]
    fn meter_times_need_an_offset_and_a_whole_minute() {
        for value in ["2026-07-01 17:00", "2026-07-01T17:00:30Z", "yesterday"] {
            let errors = first(
                &format!("der_id,interval_start,interval_minutes,kwh\n0195f3a0-0000-7000-8000-000000000001,{value},60,1\n"),
                Kind::MeterData,
                meter,
            )
            .expect_err("invalid");
            assert_eq!(columns(&errors), ["interval_start"], "{value}");
        }
    }

    #[test]
    fn meter_intervals_are_the_listed_lengths() {
        let errors = first(
            "der_external_id,interval_start,interval_minutes,kwh\nm,2026-07-01T17:00:00Z,7,1\n",
            Kind::MeterData,
            meter,
        )
        .expect_err("invalid");
        assert_eq!(columns(&errors), ["interval_minutes"]);
    }
}
