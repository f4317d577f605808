//! The audit API's committed OpenAPI document is what the code generates, and the
//! offline verifier accepts an untouched export and refuses a tampered one.

use std::process::Command;

use pmcore_audit_log::log::{
    bundle::{FORMAT, Header, Line, b64},
    leaf::Entry,
    note::CheckpointSigner,
    tree::{self, Memory},
};

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

#[test]
fn the_committed_document_matches_the_code() {
    let generated =
        serde_json::to_value(pmcore_audit_log::http::openapi::document()).expect("serializes");
    let committed: serde_json::Value = std::fs::read_to_string(COMMITTED)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    assert!(
        generated == committed,
        "services/audit-log/openapi.json is out of date: run `just gen-audit-spec`"
    );
}

fn export(dir: &std::path::Path) -> (String, std::path::PathBuf, String) {
    let (_, signer) = CheckpointSigner::generate("audit.test/log").expect("key");
    let entries: Vec<Entry> = (0..9u64)
        .map(|i| Entry {
            index: i,
            event_id: uuid::Uuid::from_u128(u128::from(i) + 1),
            event_type: "pmcore.enrollment.requested.v1".into(),
            source: "api".into(),
            subject: format!("e-{i}"),
            principal: Some("client:x".into()),
            organization_id: None,
            occurred_at: "2026-07-01T17:00:00Z".parse().expect("time"),
            recorded_at: "2026-07-01T17:00:00Z".parse().expect("time"),
            topic: "pm.enrollments.v1".into(),
            payload: serde_json::json!({"committed_kw": 4}),
        })
        .collect();
    let mut tree = Memory::default();
    for e in &entries {
        tree.push(e.leaf_hash()).expect("push");
    }
    let header = Header {
        format: FORMAT.into(),
        checkpoint: signer
            .sign(9, tree.root_at(9).expect("root"))
            .expect("sign"),
        tree_size: 9,
        from: 0,
        to: 9,
    };
    let mut text = serde_json::to_string(&header).expect("json") + "\n";
    for e in &entries {
        let proof = tree::inclusion(9, e.index, &tree.hashes).expect("proof");
        text += &serde_json::to_string(&Line {
            entry: e.clone(),
            leaf_hash: b64(&e.leaf_hash()),
            proof: proof.iter().map(b64).collect(),
        })
        .expect("json");
        text += "\n";
    }
    let path = dir.join("export.jsonl");
    std::fs::write(&path, &text).expect("write");
    (signer.verifier_key().to_owned(), path, text)
}

#[test]
fn audit_tool_verifies_an_export_and_names_the_tampered_position() {
    let dir = std::env::temp_dir().join(format!("audit-tool-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (key, path, text) = export(&dir);
    let run = |file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_audit-tool"))
            .args(["verify", file.to_str().expect("path"), "--key", &key])
            .output()
            .expect("runs")
    };
    let ok = run(&path);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let tampered = dir.join("tampered.jsonl");
    std::fs::write(
        &tampered,
        text.replacen("\"subject\":\"e-6\"", "\"subject\":\"e-X\"", 1),
    )
    .expect("write");
    let bad = run(&tampered);
    assert_eq!(bad.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&bad.stdout).expect("json report");
    assert_eq!(report["first_bad_index"], 6, "{report}");
    std::fs::remove_dir_all(&dir).ok();
}
