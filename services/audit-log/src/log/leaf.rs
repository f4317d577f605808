//! The bytes of a log leaf: one audit entry, canonically encoded with its position,
//! so an auditor can rebuild every leaf from an export of the entries alone. Pure.
//!
//! The encoding is UTF-8 JSON without whitespace, object keys sorted by their
//! UTF-8 bytes at every level, strings escaped as `serde_json` writes them (only
//! `"`, `\` and control characters), timestamps as RFC 3339 UTC with six fractional
//! digits. Python's `json.dumps(entry, sort_keys=True, separators=(",", ":"),
//! ensure_ascii=False)` writes the same bytes for entries whose numbers are
//! integers or plain decimals.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One audit entry as the log commits to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, from 0.
    pub index: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub principal: Option<String>,
    pub organization_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub topic: String,
    pub payload: serde_json::Value,
}

/// Version tag of the encoding, the first key of every leaf.
pub const FORMAT: &str = "pmcore-audit-entry/v1";

impl Entry {
    /// The leaf's bytes.
    pub fn leaf(&self) -> Vec<u8> {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
        // `serde_json::Value` objects are ordered maps (the crate's default, no
        // `preserve_order`), which is what makes this canonical.
        let value = serde_json::json!({
            "format": FORMAT,
            "index": self.index,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "source": self.source,
            "subject": self.subject,
            "principal": self.principal,
            "organization_id": self.organization_id,
            "occurred_at": time(&self.occurred_at),
            "recorded_at": time(&self.recorded_at),
            "topic": self.topic,
            "payload": sorted(&self.payload),
        });
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// The RFC 6962 leaf hash, SHA-256(0x00 ‖ leaf).
    pub fn leaf_hash(&self) -> tlog_tiles::Hash {
        tlog_tiles::record_hash(&self.leaf())
    }
}

/// `value` with every object's keys in order (a no-op for `serde_json`'s own maps;
/// kept explicit so the encoding does not depend on a crate feature elsewhere in the
/// build turning on insertion order).
fn sorted(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut pairs: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            serde_json::Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(sorted).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            index: 7,
            event_id: "0195f3a0-0000-7000-8000-000000000001"
                .parse()
                .expect("uuid"),
            event_type: "pmcore.enrollment.requested.v1".into(),
            source: "api".into(),
            subject: "0195f3a0-0000-7000-8000-0000000000e1".into(),
            principal: Some("client:0195f3a0-0000-7000-8000-0000000000c1".into()),
            organization_id: None,
            occurred_at: "2026-07-01T17:00:00.123456Z".parse().expect("time"),
            recorded_at: "2026-07-01T17:00:01Z".parse().expect("time"),
            topic: "pm.enrollments.v1".into(),
            payload: serde_json::json!({"z": 1, "a": {"y": [2, {"c": "é\"", "b": null}], "x": 5.5}}),
        }
    }

    #[test]
    fn the_encoding_is_the_documented_one_byte_for_byte() {
        let text = String::from_utf8(entry().leaf()).expect("utf-8");
        assert_eq!(
            text,
            concat!(
                r#"{"event_id":"0195f3a0-0000-7000-8000-000000000001","#,
                r#""event_type":"pmcore.enrollment.requested.v1","format":"pmcore-audit-entry/v1","#,
                r#""index":7,"occurred_at":"2026-07-01T17:00:00.123456Z","organization_id":null,"#,
                r#""payload":{"a":{"x":5.5,"y":[2,{"b":null,"c":"é\""}]},"z":1},"#,
                r#""principal":"client:0195f3a0-0000-7000-8000-0000000000c1","#,
                r#""recorded_at":"2026-07-01T17:00:01.000000Z","source":"api","#,
                r#""subject":"0195f3a0-0000-7000-8000-0000000000e1","topic":"pm.enrollments.v1"}"#
            )
        );
    }

    #[test]
    fn every_field_and_the_position_change_the_leaf_hash() {
        let base = entry().leaf_hash();
        let mut changed = Vec::new();
        let mut e = entry();
        e.index = 8;
        changed.push(e);
        let mut e = entry();
        e.payload["z"] = serde_json::json!(2);
        changed.push(e);
        let mut e = entry();
        e.principal = None;
        changed.push(e);
        let mut e = entry();
        e.occurred_at += chrono::TimeDelta::microseconds(1);
        changed.push(e);
        let mut e = entry();
        e.organization_id = Some(Uuid::nil());
        changed.push(e);
        for e in changed {
            assert_ne!(e.leaf_hash(), base, "{e:?}");
        }
    }
}
