//! CloudEvents Kafka protocol binding, binary mode: attributes travel as `ce_*` headers,
//! the Avro payload is the record value.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::catalog::DomainEvent;

pub const SPEC_VERSION: &str = "1.0";
pub const CONTENT_TYPE: &str = "application/avro";

/// The longest value a `ce_*` header (or `traceparent`) may carry. Every attribute the
/// platform writes is an id, a type name or a principal, well under it; a record with
/// a longer one did not come from pmcore, and a consumer parks it rather than store
/// (or audit) a field of arbitrary size.
pub const MAX_HEADER_BYTES: usize = 512;

/// The metadata of one event. `id` is the idempotency key consumers dedupe on.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: Uuid,
    pub source: String,
    pub ce_type: String,
    pub time: DateTime<Utc>,
    pub subject: String,
    /// W3C trace context of the request that caused the event.
    pub traceparent: Option<String>,
    /// Who acted (`client:<id>`, `user:<id>`, `service:<name>`), for the audit trail.
    pub principal: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeaderError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("header {name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl Envelope {
    pub fn for_event<E: DomainEvent>(event: &E, source: &str, principal: Option<String>) -> Self {
        Self {
            id: Uuid::now_v7(),
            source: source.to_owned(),
            ce_type: E::TYPE.ce_type.to_owned(),
            time: Utc::now(),
            subject: event.subject(),
            traceparent: None,
            principal,
        }
    }

    /// Headers in the order the binding lists them.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("ce_specversion", SPEC_VERSION.to_owned()),
            ("ce_id", self.id.to_string()),
            ("ce_source", self.source.clone()),
            ("ce_type", self.ce_type.clone()),
            (
                "ce_time",
                self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
            ("ce_subject", self.subject.clone()),
            ("content-type", CONTENT_TYPE.to_owned()),
        ];
        if let Some(tp) = &self.traceparent {
            headers.push(("traceparent", tp.clone()));
        }
        if let Some(p) = &self.principal {
            headers.push(("ce_principal", p.clone()));
        }
        headers
    }

    /// Reads the envelope from record headers. `get` returns a header's raw bytes.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> Result<Self, HeaderError> {
        let text = |name: &'static str| -> Result<Option<String>, HeaderError> {
            get(name)
                .map(|b| {
                    if b.len() > MAX_HEADER_BYTES {
                        return Err(HeaderError::Invalid {
                            name,
                            reason: format!(
                                "{} bytes, more than the {MAX_HEADER_BYTES} allowed",
                                b.len()
                            ),
                        });
                    }
                    std::str::from_utf8(b)
                        .map(str::to_owned)
                        .map_err(|e| HeaderError::Invalid {
                            name,
                            reason: e.to_string(),
                        })
                })
                .transpose()
        };
        let required = |name: &'static str| text(name)?.ok_or(HeaderError::Missing(name));

        let spec = required("ce_specversion")?;
        if spec != SPEC_VERSION {
            return Err(HeaderError::Invalid {
                name: "ce_specversion",
                reason: format!("expected {SPEC_VERSION}, got {spec}"),
            });
        }
        let id = required("ce_id")?;
        let id = Uuid::parse_str(&id).map_err(|e| HeaderError::Invalid {
            name: "ce_id",
            reason: e.to_string(),
        })?;
        let time = required("ce_time")?;
        let time = DateTime::parse_from_rfc3339(&time)
            .map_err(|e| HeaderError::Invalid {
                name: "ce_time",
                reason: e.to_string(),
            })?
            .with_timezone(&Utc);
        Ok(Self {
            id,
            source: required("ce_source")?,
            ce_type: required("ce_type")?,
            time,
            subject: required("ce_subject")?,
            traceparent: text("traceparent")?,
            principal: text("ce_principal")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            source: "api".into(),
            ce_type: "pmcore.program.created.v1".into(),
            time: Utc::now(),
            subject: "p-1".into(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            principal: Some("client:abc".into()),
        }
    }

    fn lookup(headers: &[(&'static str, String)], name: &str) -> Option<Vec<u8>> {
        headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_bytes().to_vec())
    }

    #[test]
    fn headers_round_trip() {
        let env = envelope();
        let headers = env.to_headers();
        let owned: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect();
        let back = Envelope::from_headers(|name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_slice())
        })
        .expect("parses");
        // Time is carried at microsecond precision.
        assert_eq!(back.id, env.id);
        assert_eq!(back.principal, env.principal);
        assert_eq!(back.traceparent, env.traceparent);
        assert_eq!(back.time.timestamp_micros(), env.time.timestamp_micros());
    }

    #[test]
    fn missing_or_bad_headers_are_reported_by_name() {
        let headers = envelope().to_headers();
        let without_id: Vec<_> = headers.iter().filter(|(k, _)| *k != "ce_id").collect();
        let owned: Vec<(String, Vec<u8>)> = without_id
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect();
        let err = Envelope::from_headers(|name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_slice())
        })
        .expect_err("must fail");
        assert_eq!(err, HeaderError::Missing("ce_id"));
        assert!(lookup(&headers, "ce_id").is_some());
    }

    #[test]
    fn an_oversized_attribute_is_refused_by_name() {
        let mut env = envelope();
        env.subject = "x".repeat(MAX_HEADER_BYTES);
        let parse = |env: &Envelope| {
            let owned: Vec<(&str, Vec<u8>)> = env
                .to_headers()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            Envelope::from_headers(|name| {
                owned
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.as_slice())
            })
        };
        assert!(parse(&env).is_ok(), "the limit itself is allowed");
        env.subject.push('x');
        assert!(matches!(
            parse(&env),
            Err(HeaderError::Invalid {
                name: "ce_subject",
                ..
            })
        ));
    }
}
