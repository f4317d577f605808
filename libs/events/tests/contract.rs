//! The code's catalog and `asyncapi/asyncapi.yaml` describe the same topics and
//! message types. Adding a topic or an event type to one side only fails here.

use std::collections::BTreeSet;

use pmcore_events::catalog::{EVENT_TYPES, TOPICS};
use serde_yaml::Value;

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../asyncapi/asyncapi.yaml");
    let text = std::fs::read_to_string(path).expect("asyncapi.yaml is readable");
    serde_yaml::from_str(&text).expect("asyncapi.yaml is YAML")
}

fn mapping<'a>(v: &'a Value, key: &str) -> &'a serde_yaml::Mapping {
    v.get(key)
        .and_then(Value::as_mapping)
        .unwrap_or_else(|| panic!("`{key}` is a mapping"))
}

#[test]
fn every_topic_in_code_is_a_channel_and_back() {
    let doc = document();
    let addresses: BTreeSet<String> = mapping(&doc, "channels")
        .values()
        .filter_map(|c| c.get("address").and_then(Value::as_str))
        .filter(|a| !a.contains('{') && !a.starts_with('/'))
        .map(str::to_owned)
        .collect();
    let in_code: BTreeSet<String> = TOPICS.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(
        in_code, addresses,
        "topics in libs/events/src/catalog.rs and channels in asyncapi.yaml differ"
    );
}

#[test]
fn every_event_type_is_a_message_on_its_channel_with_its_schema() {
    let doc = document();
    let components = doc.get("components").expect("components");
    let messages = mapping(components, "messages");
    let documented: BTreeSet<String> = messages
        .values()
        .filter_map(|m| m.get("x-cloudevents-type").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let in_code: BTreeSet<String> = EVENT_TYPES.iter().map(|t| t.ce_type.to_owned()).collect();
    assert_eq!(
        in_code, documented,
        "event types in code and document differ"
    );

    for t in EVENT_TYPES {
        let (name, message) = messages
            .iter()
            .find(|(_, m)| m.get("x-cloudevents-type").and_then(Value::as_str) == Some(t.ce_type))
            .expect("message is documented");
        let name = name.as_str().expect("message names are strings");
        let schema_ref = message
            .get("payload")
            .and_then(|p| p.get("schema"))
            .and_then(|s| s.get("$ref"))
            .and_then(Value::as_str);
        assert_eq!(
            schema_ref,
            Some(format!("./schemas/{}", t.schema_file).as_str()),
            "{} must point at its schema file",
            t.ce_type
        );

        let channel = mapping(&doc, "channels")
            .values()
            .find(|c| c.get("address").and_then(Value::as_str) == Some(t.topic.name))
            .expect("topic has a channel");
        let wanted = format!("#/components/messages/{name}");
        let carried = channel
            .get("messages")
            .and_then(Value::as_mapping)
            .is_some_and(|ms| {
                ms.values()
                    .any(|m| m.get("$ref").and_then(Value::as_str) == Some(wanted.as_str()))
            });
        assert!(carried, "channel {} must list {}", t.topic.name, t.ce_type);
    }
}
