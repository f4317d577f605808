//! The S3 client against the stack's S3 server (s3s-fs or MinIO).

use pmcore_storage::{S3Config, client, ensure_buckets, ping};
use uuid::Uuid;

fn config() -> S3Config {
    let suffix = Uuid::now_v7().simple().to_string();
    S3Config {
        endpoint: std::env::var("PMCORE_S3_ENDPOINT")
            .unwrap_or_else(|_| "http://127.0.0.1:9000".into()),
        region: "us-east-1".into(),
        access_key: std::env::var("PMCORE_S3_ACCESS_KEY").unwrap_or_else(|_| "pmcore".into()),
        secret_key: std::env::var("PMCORE_S3_SECRET_KEY")
            .unwrap_or_else(|_| "pmcore-secret".into())
            .into(),
        inbound_bucket: format!("inbound-{suffix}"),
        reports_bucket: format!("reports-{suffix}"),
        public_endpoint: None,
    }
}

#[tokio::test]
async fn buckets_are_created_once_and_objects_round_trip() {
    let config = config();
    let s3 = client(&config);
    assert!(
        ping(&s3, &config).await.is_err(),
        "fresh bucket names do not exist yet"
    );
    ensure_buckets(&s3, &config).await.expect("created");
    ensure_buckets(&s3, &config)
        .await
        .expect("creating again is a no-op");
    ping(&s3, &config)
        .await
        .expect("ready once the buckets exist");

    let body = b"der_id,type,nameplate_kw\n1,battery,5.0\n".to_vec();
    s3.put_object()
        .bucket(&config.inbound_bucket)
        .key("uploads/ders.csv")
        .body(body.clone().into())
        .send()
        .await
        .expect("put");
    let got = s3
        .get_object()
        .bucket(&config.inbound_bucket)
        .key("uploads/ders.csv")
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_eq!(got.as_ref(), body.as_slice());
}

#[tokio::test]
async fn wrong_credentials_are_refused() {
    let mut config = config();
    let s3 = client(&config);
    ensure_buckets(&s3, &config).await.expect("created");
    config.secret_key = "not-the-secret".to_owned().into();
    let impostor = client(&config);
    assert!(ping(&impostor, &config).await.is_err());
}
