//! The frames of the gateway protocol (`gatewaySession` in `asyncapi/asyncapi.yaml`).
//!
//! Public so the simulator and the tests speak exactly what the relay parses.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Frames a gateway sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GatewayFrame {
    Hello {
        gateway_id: Uuid,
        secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        firmware: Option<String>,
        #[serde(default)]
        ders: Vec<Uuid>,
    },
    Telemetry {
        batch_id: String,
        readings: Vec<WireReading>,
    },
    CommandAck {
        command_id: Uuid,
        status: AckStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Heartbeat,
}

/// One reading on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireReading {
    pub der_id: Uuid,
    pub ts: DateTime<Utc>,
    pub power_kw: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soc_pct: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    Received,
    Applied,
    Rejected,
}

impl AckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Received => "received",
            AckStatus::Applied => "applied",
            AckStatus::Rejected => "rejected",
        }
    }
}

/// Frames the relay sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayFrame {
    Welcome {
        session_id: Uuid,
        server_time: DateTime<Utc>,
        heartbeat_interval_s: u64,
        unknown_ders: Vec<Uuid>,
    },
    TelemetryAck {
        batch_id: String,
    },
    Command(WireCommand),
    Heartbeat,
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command_id: Option<Uuid>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireCommand {
    pub command_id: Uuid,
    pub der_id: Uuid,
    pub event_id: Option<Uuid>,
    pub kind: String,
    pub value_kw: f64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Malformed,
    UnknownType,
    Invalid,
    NotAuthenticated,
    UnknownDer,
    RateLimited,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Invalid => "invalid",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::UnknownDer => "unknown_der",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// WebSocket close codes the relay uses.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    /// The relay cannot take the session now (every secret-verification slot busy).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const HEARTBEAT_TIMEOUT: u16 = 4008;
}

const KNOWN_TYPES: &[&str] = &["hello", "telemetry", "command_ack", "heartbeat"];

/// Parses a text frame, telling malformed JSON, unknown types and invalid fields apart.
pub fn parse(text: &str) -> Result<GatewayFrame, (ErrorCode, String)> {
    // The common case in one pass; only a refused frame is looked at twice.
    let error = match serde_json::from_str(text) {
        Ok(frame) => return Ok(frame),
        Err(e) => e,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (ErrorCode::Malformed, format!("not JSON: {e}")))?;
    let Some(kind) = value.get("type").and_then(serde_json::Value::as_str) else {
        return Err((
            ErrorCode::Malformed,
            "a frame is an object with a string `type`".to_owned(),
        ));
    };
    if !KNOWN_TYPES.contains(&kind) {
        let mut shown: String = kind.chars().take(40).collect();
        if shown.len() < kind.len() {
            shown.push('…');
        }
        return Err((
            ErrorCode::UnknownType,
            format!("unknown frame type `{shown}`"),
        ));
    }
    Err((ErrorCode::Invalid, format!("invalid {kind}: {error}")))
}

/// Free text from a gateway, fit to store and show: control characters (NUL among
/// them, which Postgres cannot store) become spaces, and it is cut to `max` chars.
pub fn clean_text(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_text_loses_control_characters_and_excess() {
        assert_eq!(clean_text("ok\u{0}bad\nline", 100), "ok bad line");
        assert_eq!(clean_text("éééé", 2), "éé");
    }

    #[test]
    fn tells_malformed_unknown_and_invalid_apart() {
        assert_eq!(parse("{nope").expect_err("refused").0, ErrorCode::Malformed);
        assert_eq!(parse("[1]").expect_err("refused").0, ErrorCode::Malformed);
        assert_eq!(
            parse(r#"{"type":"reboot"}"#).expect_err("refused").0,
            ErrorCode::UnknownType
        );
        assert_eq!(
            parse(r#"{"type":"telemetry","batch_id":"b"}"#)
                .expect_err("refused")
                .0,
            ErrorCode::Invalid
        );
        // A heartbeat carries nothing the relay reads, so extra fields are let be.
        assert_eq!(
            parse(r#"{"type":"heartbeat","uptime_s":1}"#),
            Ok(GatewayFrame::Heartbeat)
        );
        assert_eq!(
            parse(r#"{"type":"command_ack","command_id":"x","status":"applied"}"#)
                .expect_err("refused")
                .0,
            ErrorCode::Invalid
        );
        assert_eq!(
            parse(r#"{"type":"heartbeat"}"#),
            Ok(GatewayFrame::Heartbeat)
        );
    }

    #[test]
    fn telemetry_round_trips() {
        let frame = GatewayFrame::Telemetry {
            batch_id: "b-1".into(),
            readings: vec![WireReading {
                der_id: Uuid::nil(),
                ts: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
                power_kw: -3.5,
                soc_pct: Some(50.0),
            }],
        };
        let text = serde_json::to_string(&frame).unwrap_or_default();
        assert_eq!(parse(&text), Ok(frame));
    }
}
