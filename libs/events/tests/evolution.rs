//! The schema-evolution gate. Records written under a released contract stay on the
//! topics for their retention, and subscribers built against it keep running, so every
//! release under `asyncapi/releases/<tag>/` (a copy of `asyncapi/` at that git tag) binds
//! the code: each released event type still exists on the same topic, and its current
//! schema can read every datum the released one wrote, by the Avro specification's
//! schema-resolution rules. A breaking change is a new type (`….v2`) beside the old
//! one; docs/subscribers.md says how.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use apache_avro::{
    Schema,
    schema_compatibility::{Compatibility, SchemaCompatibility},
};
use pmcore_events::catalog;
use serde_yaml::Value;

fn releases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../asyncapi/releases");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("asyncapi/releases/ is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.join("asyncapi.yaml").is_file())
        .collect();
    found.sort();
    found
}

/// A released contract's event types: CloudEvents type → (topic, schema text).
fn released_types(release: &Path) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(release.join("asyncapi.yaml")).expect("released document");
    let doc: Value = serde_yaml::from_str(&text).expect("released document is YAML");
    let channels = doc["channels"].as_mapping().expect("channels");
    let messages = doc["components"]["messages"]
        .as_mapping()
        .expect("components.messages");
    let mut types = BTreeMap::new();
    for (name, message) in messages {
        let Some(ce_type) = message["x-cloudevents-type"].as_str() else {
            continue; // the gateway protocol's JSON frames are not Avro records
        };
        let name = name.as_str().expect("message name");
        let wanted = format!("#/components/messages/{name}");
        let topic = channels
            .values()
            .find(|c| {
                c["messages"].as_mapping().is_some_and(|ms| {
                    ms.values()
                        .any(|m| m["$ref"].as_str() == Some(wanted.as_str()))
                })
            })
            .and_then(|c| c["address"].as_str())
            .unwrap_or_else(|| panic!("{ce_type} is on no channel in {}", release.display()));
        let schema_ref = message["payload"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{ce_type} has no schema"));
        let schema = std::fs::read_to_string(release.join(schema_ref))
            .unwrap_or_else(|e| panic!("{ce_type}: {schema_ref}: {e}"));
        types.insert(ce_type.to_owned(), (topic.to_owned(), schema));
    }
    types
}

/// The contract as the code has it: CloudEvents type → (topic, schema file, schema text).
type Current = BTreeMap<String, (String, String, String)>;

fn current() -> Current {
    catalog::EVENT_TYPES
        .iter()
        .map(|t| {
            (
                t.ce_type.to_owned(),
                (
                    t.topic.name.to_owned(),
                    t.schema_file.to_owned(),
                    t.schema_json.to_owned(),
                ),
            )
        })
        .collect()
}

/// Why `current` cannot stand in for a released contract, if it cannot.
fn breaks(released: &BTreeMap<String, (String, String)>, current: &Current) -> Vec<String> {
    let mut problems = Vec::new();
    for (ce_type, (topic, schema)) in released {
        let Some((now_topic, now_file, now_schema)) = current.get(ce_type) else {
            problems.push(format!(
                "{ce_type} was released and is gone (removed or renamed): keep it, and add a new type beside it"
            ));
            continue;
        };
        if now_topic != topic {
            problems.push(format!(
                "{ce_type} moved from {topic} to {now_topic}: subscribers of {topic} would miss it"
            ));
        }
        let writer = Schema::parse_str(schema).expect("released schema parses");
        let reader = Schema::parse_str(now_schema).expect("current schema parses");
        match SchemaCompatibility::can_read(&writer, &reader) {
            Ok(Compatibility::Full) => {}
            Ok(Compatibility::Partial) => problems.push(format!(
                "{ce_type}: {now_file} can read only some records written with the released schema"
            )),
            Err(e) => problems.push(format!(
                "{ce_type}: {now_file} cannot read records written with the released schema: {e}"
            )),
        }
    }
    problems
}

#[test]
fn every_release_is_still_readable() {
    let releases = releases();
    assert!(!releases.is_empty(), "asyncapi/releases/ holds no release");
    let current = current();
    for release in releases {
        let released = released_types(&release);
        assert!(
            released.len() >= 30,
            "{} lists only {} event types",
            release.display(),
            released.len()
        );
        let problems = breaks(&released, &current);
        assert!(
            problems.is_empty(),
            "the contract breaks release {}:\n  {}",
            release.display(),
            problems.join("\n  ")
        );
    }
}

/// The gate must tell a compatible change from each kind of breaking one.
#[test]
fn the_gate_refuses_breaking_changes_and_lets_compatible_ones_through() {
    let release = releases().pop().expect("a release");
    let released = released_types(&release);
    const TYPE: &str = "pmcore.program.created.v1";
    let with_field = |field: serde_json::Value| {
        let mut changed = current();
        let entry = changed.get_mut(TYPE).expect("program.created exists");
        let mut schema: serde_json::Value = serde_json::from_str(&entry.2).expect("schema JSON");
        schema["fields"].as_array_mut().expect("fields").push(field);
        entry.2 = schema.to_string();
        changed
    };

    // A new field with a default: old records read with the default.
    let compatible =
        with_field(serde_json::json!({"name": "region", "type": "string", "default": ""}));
    assert_eq!(breaks(&released, &compatible), Vec::<String>::new());

    // Without a default, an old record has no value for it.
    let required = with_field(serde_json::json!({"name": "region", "type": "string"}));
    let problems = breaks(&released, &required);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("pmcore.program.created.v1: program-created.avsc cannot read"),
        "{problems:?}"
    );

    let mut removed = current();
    removed.remove(TYPE);
    assert!(
        breaks(&released, &removed)
            .iter()
            .any(|p| p.starts_with("pmcore.program.created.v1 was released and is gone"))
    );

    let mut moved = current();
    moved.get_mut(TYPE).expect("exists").0 = "pm.ders.v1".to_owned();
    assert!(
        breaks(&released, &moved)
            .iter()
            .any(|p| p.starts_with("pmcore.program.created.v1 moved from pm.programs.v1"))
    );
}
