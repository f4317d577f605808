//! Tokens from an external OIDC provider. The provider is the edge of the world here:
//! the test serves its JWKS from a small HTTP server and signs tokens with its key.

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use axum::{Json, Router, routing::get};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApi, problem, spawn_with};

const ISSUER: &str = "https://idp.example.test";

struct Provider {
    pkcs8: Vec<u8>,
    kid: &'static str,
}

impl Provider {
    fn new(kid: &'static str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("key");
        Self {
            pkcs8: pkcs8.as_ref().to_vec(),
            kid,
        }
    }

    fn jwk(&self) -> Value {
        let pair = Ed25519KeyPair::from_pkcs8(&self.pkcs8).expect("pair");
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"})
    }

    fn token(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.to_owned());
        encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8)).expect("signed")
    }
}

async fn serve_jwks(keys: Vec<Value>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = json!({"keys": keys});
    let app = Router::new().route("/jwks", get(move || async move { Json(body) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks")
}

fn claims(org: Uuid, overrides: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({
        "iss": ISSUER, "aud": "pmcore-api", "sub": "alice", "iat": now, "exp": now + 600,
        "pmcore_org": org, "pmcore_roles": ["aggregator"],
    });
    if let (Some(c), Some(o)) = (c.as_object_mut(), overrides.as_object()) {
        c.extend(o.clone());
    }
    c
}

async fn app_with(provider: &Provider) -> (TestApi, Uuid) {
    let (api, org, _) = app_and_jwks(provider).await;
    (api, org)
}

/// The api with the provider configured; the organization and the JWKS address.
async fn app_and_jwks(provider: &Provider) -> (TestApi, Uuid, String) {
    let jwks = serve_jwks(vec![provider.jwk()]).await;
    let api = spawn_with(|c| {
        c.oidc.issuer = Some(ISSUER.to_owned());
        c.oidc.jwks_url = Some(jwks.clone());
    })
    .await;

    let org: Value = api
        .post(
            "/v1/organizations",
            &api.admin,
            &json!({"name": "IdP Aggregation", "kind": "aggregator"}),
        )
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let org = org["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    (api, org, jwks)
}

#[tokio::test]
async fn a_provider_token_acts_for_its_organization_with_its_roles() {
    let provider = Provider::new("k1");
    let (api, org) = app_with(&provider).await;
    let token = provider.token(&claims(org, json!({})));
    let response = api
        .post("/v1/gateways", &token, &json!({"name": "idp box"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let gateway: Value = response.json().await.expect("json");
    assert_eq!(gateway["organization_id"], org.to_string());
    // Still an aggregator: admin operations stay closed.
    let response = api
        .get("/v1/organizations", &token)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::FORBIDDEN).await;
    // Our own HS256 tokens keep working next to the provider's.
    assert_eq!(
        api.get("/v1/organizations", &api.admin)
            .send()
            .await
            .expect("request")
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_issuer_audience_key_or_organization_is_refused() {
    let provider = Provider::new("k1");
    let (api, org) = app_with(&provider).await;
    let cases = [
        provider.token(&claims(org, json!({"iss": "https://evil.example.test"}))),
        provider.token(&claims(org, json!({"aud": "someone-else"}))),
        provider.token(&claims(
            org,
            json!({"exp": chrono::Utc::now().timestamp() - 3600}),
        )),
        provider.token(&claims(Uuid::now_v7(), json!({}))),
        provider.token(&claims(org, json!({"pmcore_org": null}))),
        // Same key id, different key: the signature does not verify.
        Provider::new("k1").token(&claims(org, json!({}))),
        // A key the provider does not publish.
        Provider::new("k2").token(&claims(org, json!({}))),
    ];
    for token in cases {
        let response = api.get("/v1/ders", &token).send().await.expect("request");
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn provider_tokens_follow_the_same_role_policy_and_need_the_standard_claims() {
    let provider = Provider::new("k1");
    let (api, org) = app_with(&provider).await;
    // An aggregator's user whose provider says `admin`: the role is not honoured
    // (only the utility's people hold utility roles), so no organizations for it.
    let token = provider.token(&claims(
        org,
        json!({"pmcore_roles": ["admin", "aggregator"]}),
    ));
    let response = api
        .post(
            "/v1/organizations",
            &token,
            &json!({"name": "Mine now", "kind": "utility"}),
        )
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::FORBIDDEN).await;
    // Its aggregator role still works.
    let response = api.get("/v1/ders", &token).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);

    // Tokens missing exp, aud or sub are refused.
    for missing in ["exp", "aud", "sub"] {
        let mut c = claims(org, json!({}));
        c.as_object_mut().expect("object").remove(missing);
        let response = api
            .get("/v1/ders", &provider.token(&c))
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "without {missing}"
        );
    }
}

#[tokio::test]
async fn the_audit_log_and_messaging_accept_the_providers_tokens_under_the_same_policy() {
    let provider = Provider::new("k1");
    let (api, org, jwks) = app_and_jwks(&provider).await;
    let oidc = pmcore_web::oidc::OidcConfig {
        issuer: Some(ISSUER.to_owned()),
        jwks_url: Some(jwks),
        ..pmcore_web::oidc::OidcConfig::disabled()
    };
    let audit = {
        let oidc = oidc.clone();
        crate::audit::audit_log_with(&api, move |c| c.oidc = oidc).await
    };
    let clock = pmcore_runtime::clock::ManualClock::at(chrono::Utc::now());
    let messaging = {
        let oidc = oidc.clone();
        crate::messaging::messaging(&api, &clock, &format!("m-{}", Uuid::now_v7()), move |c| {
            c.oidc = oidc;
        })
        .await
    };
    let http = reqwest::Client::new();
    let status = |addr: std::net::SocketAddr, path: &'static str, token: String| {
        let http = http.clone();
        async move {
            http.get(format!("http://{addr}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    let auditor = provider.token(&claims(org, json!({"pmcore_roles": ["auditor"]})));
    let aggregator = provider.token(&claims(org, json!({})));
    assert_eq!(
        status(audit.addr, "/v1/audit/entries", auditor.clone()).await,
        StatusCode::OK
    );
    // Roles still decide: an aggregator is not an auditor.
    assert_eq!(
        status(audit.addr, "/v1/audit/entries", aggregator.clone()).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(messaging.addr, "/v1/messaging/endpoints", aggregator).await,
        StatusCode::OK
    );
    // A token from another issuer is refused as at the api.
    let stranger = provider.token(&claims(org, json!({"iss": "https://evil.example.test"})));
    assert_eq!(
        status(audit.addr, "/v1/audit/entries", stranger).await,
        StatusCode::UNAUTHORIZED
    );
}
