//! Avro single-object encoding: `C3 01`, the schema's 8-byte CRC-64-AVRO fingerprint
//! (little-endian) of its Parsing Canonical Form as the specification defines it
//! ([`crate::canonical`]), then the binary datum. Any subscriber holding the
//! committed schemas can decode a payload without a registry.
//!
//! Records written before that fix carry `apache-avro`'s own fingerprint, which
//! differs for schemas with logical types; decoding accepts both for a transition
//! period (see `docs/subscribers.md`).

use std::{collections::HashMap, sync::LazyLock};

use apache_avro::{
    Schema, rabin::Rabin, reader::datum::GenericDatumReader, types::Value,
    writer::datum::GenericDatumWriter,
};

use crate::catalog::{DomainEvent, EVENT_TYPES, EventType};

const MARKER: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = MARKER.len() + 8;

struct Compiled {
    event_type: &'static EventType,
    schema: Schema,
    /// Per the specification; what `encode` writes.
    fingerprint: [u8; 8],
    /// `apache-avro` 0.22's, which earlier releases wrote; still read.
    legacy_fingerprint: [u8; 8],
}

/// Parsed once per process; a schema that fails to parse is a build defect that
/// the `schemas_parse` test catches, so such an entry is left out here rather than
/// taking the process down.
static COMPILED: LazyLock<Vec<Compiled>> =
    LazyLock::new(|| EVENT_TYPES.iter().filter_map(|t| compile(t).ok()).collect());

static BY_FINGERPRINT: LazyLock<HashMap<[u8; 8], usize>> = LazyLock::new(|| {
    COMPILED
        .iter()
        .enumerate()
        .flat_map(|(i, c)| [(c.legacy_fingerprint, i), (c.fingerprint, i)])
        .collect()
});

fn compile(event_type: &'static EventType) -> Result<Compiled, String> {
    let schema = Schema::parse_str(event_type.schema_json).map_err(|e| e.to_string())?;
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut legacy_fingerprint = [0u8; 8];
    legacy_fingerprint.copy_from_slice(&bytes[..8]);
    let fingerprint =
        crate::canonical::fingerprint(event_type.schema_json).map_err(|e| e.to_string())?;
    Ok(Compiled {
        event_type,
        schema,
        fingerprint,
        legacy_fingerprint,
    })
}

/// The fingerprint `encode` writes for an event type (per the specification).
pub fn fingerprint_of(event_type: &'static EventType) -> Option<[u8; 8]> {
    compiled_for(event_type).map(|c| c.fingerprint)
}

/// Parses an event type's schema; used by tests and by start-up self checks.
pub fn schema_of(event_type: &'static EventType) -> Result<Schema, apache_avro::Error> {
    Schema::parse_str(event_type.schema_json)
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("no compiled schema for {0}")]
    UnknownType(&'static str),
    #[error("payload does not fit schema of {ce_type}: {source}")]
    Avro {
        ce_type: &'static str,
        #[source]
        source: Box<apache_avro::Error>,
    },
}

/// Why bytes could not be read as an event. Every variant is permanent: the same
/// bytes will never decode, so consumers dead-letter them.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {0} bytes is shorter than the {HEADER_LEN}-byte single-object header")]
    TooShort(usize),
    #[error("payload does not start with the Avro single-object marker C3 01")]
    BadMarker,
    #[error("no known schema has fingerprint {0}")]
    UnknownFingerprint(String),
    #[error("payload is {found} but the ce_type header says {expected}")]
    TypeMismatch {
        expected: String,
        found: &'static str,
    },
    #[error("datum does not match schema of {ce_type}: {message}")]
    Datum {
        ce_type: &'static str,
        message: String,
    },
}

fn compiled_for(event_type: &EventType) -> Option<&'static Compiled> {
    COMPILED
        .iter()
        .find(|c| c.event_type.ce_type == event_type.ce_type)
}

/// Encodes a domain event in single-object form.
pub fn encode<E: DomainEvent>(event: &E) -> Result<Vec<u8>, EncodeError> {
    let compiled = compiled_for(E::TYPE).ok_or(EncodeError::UnknownType(E::TYPE.ce_type))?;
    let avro_err = |e: apache_avro::Error| EncodeError::Avro {
        ce_type: E::TYPE.ce_type,
        source: Box::new(e),
    };
    let value = apache_avro::to_value(event)
        .and_then(|v| v.resolve(&compiled.schema))
        .map_err(avro_err)?;
    let datum = GenericDatumWriter::builder(&compiled.schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(avro_err)?;
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&compiled.fingerprint);
    out.extend_from_slice(&datum);
    Ok(out)
}

/// A decoded payload: which event type it is and its Avro value.
#[derive(Debug)]
pub struct Decoded {
    pub event_type: &'static EventType,
    pub value: Value,
}

impl Decoded {
    /// The payload as JSON, for storage and display (uuid and timestamps as strings/numbers).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::try_from(self.value.clone()).unwrap_or(serde_json::Value::Null)
    }

    /// The payload as a typed event, leaving `self` intact.
    pub fn clone_typed<E: DomainEvent>(&self) -> Result<E, DecodeError> {
        Decoded {
            event_type: self.event_type,
            value: self.value.clone(),
        }
        .into_typed()
    }

    pub fn into_typed<E: DomainEvent>(self) -> Result<E, DecodeError> {
        if self.event_type.ce_type != E::TYPE.ce_type {
            return Err(DecodeError::TypeMismatch {
                expected: E::TYPE.ce_type.to_owned(),
                found: self.event_type.ce_type,
            });
        }
        apache_avro::from_value(&self.value).map_err(|e| DecodeError::Datum {
            ce_type: self.event_type.ce_type,
            message: e.to_string(),
        })
    }
}

/// Decodes single-object bytes, checking them against the `ce_type` header when given.
/// Never panics on untrusted input: lengths are checked before any byte is read.
pub fn decode(bytes: &[u8], expected_type: Option<&str>) -> Result<Decoded, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::TooShort(bytes.len()));
    }
    let (header, mut datum) = bytes.split_at(HEADER_LEN);
    if header[..2] != MARKER {
        return Err(DecodeError::BadMarker);
    }
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&header[2..]);
    let compiled = BY_FINGERPRINT
        .get(&fingerprint)
        .and_then(|&i| COMPILED.get(i))
        .ok_or_else(|| DecodeError::UnknownFingerprint(hex(&fingerprint)))?;
    let ce_type = compiled.event_type.ce_type;
    if let Some(expected) = expected_type
        && expected != ce_type
    {
        return Err(DecodeError::TypeMismatch {
            expected: expected.to_owned(),
            found: ce_type,
        });
    }
    let value = GenericDatumReader::builder(&compiled.schema)
        .build()
        .and_then(|r| r.read_value(&mut datum))
        .map_err(|e| DecodeError::Datum {
            ce_type,
            message: e.to_string(),
        })?;
    if !datum.is_empty() {
        return Err(DecodeError::Datum {
            ce_type,
            message: format!("{} trailing bytes after the datum", datum.len()),
        });
    }
    Ok(Decoded {
        event_type: compiled.event_type,
        value,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProgramCreated;

    fn sample() -> ProgramCreated {
        ProgramCreated {
            program_id: "0190b2c4-0000-7000-8000-000000000001".into(),
            organization_id: "0190b2c4-0000-7000-8000-000000000002".into(),
            name: "Summer peak".into(),
            kind: "demand_response".into(),
            status: "draft".into(),
            created_at: 1_700_000_000_000_000,
        }
    }

    #[test]
    fn every_schema_parses() {
        for t in EVENT_TYPES {
            schema_of(t).unwrap_or_else(|e| panic!("{}: {e}", t.schema_file));
        }
        assert_eq!(COMPILED.len(), EVENT_TYPES.len());
    }

    /// Fingerprints of committed schemas as fastavro 1.13.1 computes them
    /// (`fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")`, hex of the
    /// little-endian bytes): what any subscriber holding the `.avsc` files expects.
    #[test]
    fn fingerprints_match_an_independent_implementation() {
        let hex = |t: &'static EventType| -> String {
            fingerprint_of(t)
                .expect("compiled")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        use crate::catalog::*;
        assert_eq!(hex(&PROGRAM_CREATED), "da21d8ac3dc325a1");
        assert_eq!(hex(&DISPATCH_EVENT_COMPLETED), "3a08015e14c07219");
        assert_eq!(hex(&SETTLEMENT_CALCULATED), "3c72d4816ef911e8");
        assert_eq!(hex(&TELEMETRY_BATCH), "49dfe54441a17b37");
        let bytes = encode(&sample()).expect("encodes");
        assert_eq!(bytes[2..10], fingerprint_of(&PROGRAM_CREATED).expect("fp"));
    }

    #[test]
    fn records_with_the_old_fingerprint_still_decode() {
        // Written before the fix: apache-avro's own fingerprint in the header.
        let mut bytes = encode(&sample()).expect("encodes");
        let legacy = schema_of(&crate::catalog::PROGRAM_CREATED)
            .expect("schema")
            .fingerprint::<Rabin>()
            .bytes;
        assert_ne!(
            bytes[2..10],
            legacy[..8],
            "the two differ for schemas with logical types"
        );
        bytes[2..10].copy_from_slice(&legacy[..8]);
        let back: ProgramCreated = decode(&bytes, None)
            .expect("decodes")
            .into_typed()
            .expect("typed");
        assert_eq!(back, sample());
    }

    #[test]
    fn single_object_round_trip() {
        let bytes = encode(&sample()).expect("encodes");
        assert_eq!(bytes[..2], MARKER);
        let decoded = decode(&bytes, Some("pmcore.program.created.v1")).expect("decodes");
        let back: ProgramCreated = decoded.into_typed().expect("typed");
        assert_eq!(back, sample());
    }

    #[test]
    fn short_or_foreign_bytes_are_errors_not_panics() {
        assert!(matches!(decode(&[], None), Err(DecodeError::TooShort(0))));
        assert!(matches!(
            decode(&[0xC3], None),
            Err(DecodeError::TooShort(1))
        ));
        assert!(matches!(
            decode(b"{\"json\": true}", None),
            Err(DecodeError::BadMarker)
        ));
        let mut unknown = MARKER.to_vec();
        unknown.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode(&unknown, None),
            Err(DecodeError::UnknownFingerprint(_))
        ));
    }

    #[test]
    fn optional_fields_round_trip_both_ways() {
        use crate::domain::DerRegistered;
        let mut der = DerRegistered {
            der_id: "0190b2c4-0000-7000-8000-000000000003".into(),
            organization_id: "0190b2c4-0000-7000-8000-000000000002".into(),
            gateway_id: Some("0190b2c4-0000-7000-8000-000000000004".into()),
            external_id: Some("meter-17".into()),
            der_type: "battery".into(),
            nameplate_kw: 5.0,
            nameplate_kwh: Some(13.5),
            feeder: Some("F-12".into()),
            substation: None,
            registered_at: 1_700_000_000_000_000,
        };
        for _ in 0..2 {
            let bytes = encode(&der).expect("encodes");
            let back: DerRegistered = decode(&bytes, None)
                .and_then(Decoded::into_typed)
                .expect("decodes");
            assert_eq!(back, der);
            der.gateway_id = None;
            der.nameplate_kwh = None;
        }
    }

    #[test]
    fn truncated_datum_is_rejected() {
        let bytes = encode(&sample()).expect("encodes");
        let cut = &bytes[..bytes.len() - 5];
        assert!(matches!(decode(cut, None), Err(DecodeError::Datum { .. })));
    }

    #[test]
    fn header_type_must_match_payload() {
        let bytes = encode(&sample()).expect("encodes");
        assert!(matches!(
            decode(&bytes, Some("pmcore.der.registered.v1")),
            Err(DecodeError::TypeMismatch { .. })
        ));
    }
}
