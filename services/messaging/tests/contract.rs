//! The messaging API's committed OpenAPI document is what the code generates, and a
//! signature made by `messaging-tool` verifies with an independent implementation
//! (the Standard Webhooks project's own crate).

use std::{io::Write, process::Command};

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

#[test]
fn the_committed_document_matches_the_code() {
    let generated =
        serde_json::to_value(pmcore_messaging::http::openapi::document()).expect("serializes");
    let committed: serde_json::Value = std::fs::read_to_string(COMMITTED)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    assert!(
        generated == committed,
        "services/messaging/openapi.json is out of date: run `just gen-messaging-spec`"
    );
}

#[test]
fn messaging_tool_signs_what_the_reference_library_verifies() {
    let secret = pmcore_messaging::signature::generate();
    let body = br#"{"type":"endpoint.test","timestamp":"2026-11-29T10:00:00.000Z","data":{}}"#;
    let timestamp = chrono::Utc::now().timestamp();
    let mut child = Command::new(env!("CARGO_BIN_EXE_messaging-tool"))
        .args(["sign", "--secret", &secret, "--id", "msg_1"])
        .args(["--timestamp", &timestamp.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("writes");
    let out = child.wait_with_output().expect("exits");
    assert!(out.status.success());
    let signature = String::from_utf8(out.stdout).expect("utf-8");

    let webhook = standardwebhooks::Webhook::new(&secret).expect("secret");
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", "msg_1".parse().expect("header"));
    headers.insert(
        "webhook-timestamp",
        timestamp.to_string().parse().expect("header"),
    );
    headers.insert(
        "webhook-signature",
        signature.trim().parse().expect("header"),
    );
    webhook.verify(body, &headers).expect("verifies");
    let mut tampered = body.to_vec();
    tampered[10] ^= 1;
    assert!(webhook.verify(&tampered, &headers).is_err());
}
