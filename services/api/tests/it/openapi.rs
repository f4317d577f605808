//! The committed OpenAPI document is what the code generates; `just gen-api-spec`
//! rewrites it. The running API serves the same document.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

#[test]
fn the_committed_document_matches_the_code() {
    let generated = serde_json::to_value(pmcore_api::openapi::document()).expect("serializes");
    let committed: Value = std::fs::read_to_string(COMMITTED)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    assert!(
        generated == committed,
        "services/api/openapi.json is out of date: run `just gen-api-spec json`"
    );
}

#[tokio::test]
async fn the_api_serves_its_document_and_the_docs_page() {
    let api = spawn_app().await;
    let served: Value = api
        .raw()
        .get(api.url("/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        served,
        serde_json::to_value(pmcore_api::openapi::document()).expect("serializes")
    );
    let docs = api
        .raw()
        .get(api.url("/docs"))
        .send()
        .await
        .expect("request");
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.expect("html").contains("<html"));
}
