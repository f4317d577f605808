//! The Avro specification's Parsing Canonical Form and its CRC-64-AVRO fingerprint,
//! computed from the schema JSON rather than by `apache-avro`: its 0.22
//! `canonical_form()` keeps a logical type as `{"type":"string"}` where the
//! specification (and Java, Python, fastavro) reduce it to `"string"` (AVRO-4004),
//! so its fingerprints match no other implementation for schemas with `uuid` or
//! `timestamp-micros` fields. The CRC itself is the crate's (`Rabin`).
//!
//! Rules (specification, "Parsing Canonical Form for Schemas"): primitives in their
//! simple form, every other attribute than `name`, `type`, `fields`, `symbols`,
//! `items`, `values` and `size` stripped (so `logicalType`, `doc`, `default`,
//! `aliases`, `order` go, and an annotated primitive becomes the primitive), names
//! as full names, attributes in that order, no whitespace.

use apache_avro::rabin::Rabin;
use digest::Digest;
use serde_json::Value;

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an Avro schema: {0}")]
pub struct NotASchema(String);

/// The Parsing Canonical Form of `schema` (JSON text).
pub fn parsing_canonical_form(schema: &str) -> Result<String, NotASchema> {
    let value: Value = serde_json::from_str(schema).map_err(|e| NotASchema(e.to_string()))?;
    let mut out = String::new();
    canon(&value, None, &mut out)?;
    Ok(out)
}

/// CRC-64-AVRO of the Parsing Canonical Form, as the 8 little-endian bytes the
/// single-object encoding carries.
pub fn fingerprint(schema: &str) -> Result<[u8; 8], NotASchema> {
    let form = parsing_canonical_form(schema)?;
    let digest = Rabin::digest(form.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    Ok(out)
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

fn quoted(s: &str) -> String {
    // serde_json escapes only what JSON requires, as the form wants.
    serde_json::to_string(s).unwrap_or_default()
}

fn canon(v: &Value, namespace: Option<&str>, out: &mut String) -> Result<(), NotASchema> {
    match v {
        Value::String(name) if PRIMITIVES.contains(&name.as_str()) => out.push_str(&quoted(name)),
        Value::String(name) => out.push_str(&quoted(&full_name(name, namespace))),
        Value::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canon(b, namespace, out)?;
            }
            out.push(']');
        }
        Value::Object(o) => {
            let ty = o
                .get("type")
                .ok_or_else(|| NotASchema("an object without `type`".into()))?;
            let Value::String(ty) = ty else {
                // `{"type": {...}}` or `{"type": [...]}`: the inner schema is the schema.
                return canon(ty, namespace, out);
            };
            match ty.as_str() {
                t if PRIMITIVES.contains(&t) => out.push_str(&quoted(t)),
                "record" | "error" | "enum" | "fixed" => {
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| NotASchema(format!("a {ty} without a name")))?;
                    let own = o.get("namespace").and_then(Value::as_str).or(namespace);
                    let full = full_name(name, own);
                    let inner = full.rsplit_once('.').map(|(ns, _)| ns);
                    out.push_str(&format!(
                        "{{\"name\":{},\"type\":{}",
                        quoted(&full),
                        quoted(ty)
                    ));
                    match ty.as_str() {
                        "enum" => {
                            let symbols = o.get("symbols").cloned().unwrap_or(Value::Array(vec![]));
                            out.push_str(&format!(",\"symbols\":{symbols}"));
                        }
                        "fixed" => {
                            let size = o
                                .get("size")
                                .and_then(Value::as_u64)
                                .ok_or_else(|| NotASchema("a fixed without a size".into()))?;
                            out.push_str(&format!(",\"size\":{size}"));
                        }
                        _ => {
                            out.push_str(",\"fields\":[");
                            let fields = o
                                .get("fields")
                                .and_then(Value::as_array)
                                .cloned()
                                .unwrap_or_default();
                            for (i, f) in fields.iter().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                let fname = f
                                    .get("name")
                                    .and_then(Value::as_str)
                                    .ok_or_else(|| NotASchema("a field without a name".into()))?;
                                let ftype = f.get("type").ok_or_else(|| {
                                    NotASchema(format!("field {fname} without a type"))
                                })?;
                                out.push_str(&format!("{{\"name\":{},\"type\":", quoted(fname)));
                                canon(ftype, inner, out)?;
                                out.push('}');
                            }
                            out.push(']');
                        }
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    canon(
                        o.get("items")
                            .ok_or_else(|| NotASchema("an array without items".into()))?,
                        namespace,
                        out,
                    )?;
                    out.push('}');
                }
                "map" => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    canon(
                        o.get("values")
                            .ok_or_else(|| NotASchema("a map without values".into()))?,
                        namespace,
                        out,
                    )?;
                    out.push('}');
                }
                // A reference to a named type spelled as `{"type": "Name"}`.
                other => out.push_str(&quoted(&full_name(other, namespace))),
            }
        }
        other => return Err(NotASchema(format!("unexpected {other}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases from the Avro specification's test data
    /// (`share/test/data/schema-tests.txt` in apache/avro): input, canonical form and
    /// the fingerprint as Java prints it (a signed 64-bit integer).
    const CASES: &[(&str, &str, Option<i64>)] = &[
        (r#""null""#, r#""null""#, Some(7195948357588979594)),
        (r#"{"type":"boolean"}"#, r#""boolean""#, None),
        (r#""string""#, r#""string""#, Some(-8142146995180207161)),
        (
            r#"[ "int" , {"type":"boolean"} ]"#,
            r#"["int","boolean"]"#,
            Some(5392556393470105090),
        ),
        (
            r#"{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}"#,
            r#"{"name":"x.y.foo","type":"record","fields":[]}"#,
            Some(5916914534497305771),
        ),
        (
            r#"{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}"#,
            r#"{"name":"a.b.foo","type":"record","fields":[]}"#,
            Some(-4616218487480524110),
        ),
        (
            r#"{"fields":[], "type":"record", "name":"foo", "doc":"foo", "aliases":["foo","bar"]}"#,
            r#"{"name":"foo","type":"record","fields":[]}"#,
            Some(-4824392279771201922),
        ),
        (
            r#"{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":true},
                 {"order":"descending","name":"f2","doc":"Hello","type":"int"}], "type":"record", "name":"foo" }"#,
            r#"{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}"#,
            Some(-4860222112080293046),
        ),
        (
            r#"{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}"#,
            r#"{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}"#,
            Some(-4448647247586288245),
        ),
        (
            r#"{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}"#,
            r#"{"name":"x.y.z.foo","type":"fixed","size":32}"#,
            Some(-3064184465700546786),
        ),
        (
            r#"{ "items":{"type":"null"}, "type":"array"}"#,
            r#"{"type":"array","items":"null"}"#,
            Some(-589620603366471059),
        ),
        (
            r#"{ "values":"string", "type":"map"}"#,
            r#"{"type":"map","values":"string"}"#,
            Some(-8732877298790414990),
        ),
        (
            r#"{"name":"PigValue","type":"record","fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}"#,
            r#"{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}"#,
            Some(-1759257747318642341),
        ),
    ];

    #[test]
    fn the_specifications_examples() {
        for (input, canonical, fp) in CASES {
            assert_eq!(
                parsing_canonical_form(input).as_deref(),
                Ok(*canonical),
                "{input}"
            );
            if let Some(fp) = fp {
                let got = i64::from_le_bytes(fingerprint(input).expect("schema"));
                assert_eq!(got, *fp, "{input}");
            }
        }
    }

    #[test]
    fn logical_types_reduce_to_their_primitive() {
        // AVRO-4004: the form of an annotated primitive is the primitive.
        let form = parsing_canonical_form(
            r#"{"type":"record","name":"E","namespace":"io.x","fields":[
                {"name":"id","type":{"type":"string","logicalType":"uuid"}},
                {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
                {"name":"r","type":{"type":"record","name":"R","fields":[{"name":"n","type":"Other"}]}}]}"#,
        );
        assert_eq!(
            form.as_deref(),
            Ok(
                r#"{"name":"io.x.E","type":"record","fields":[{"name":"id","type":"string"},{"name":"at","type":"long"},{"name":"r","type":{"name":"io.x.R","type":"record","fields":[{"name":"n","type":"io.x.Other"}]}}]}"#
            )
        );
        assert!(parsing_canonical_form("{").is_err());
        assert!(parsing_canonical_form(r#"{"name":"x"}"#).is_err());
    }
}
