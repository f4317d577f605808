//! Object storage. Path-style addressing so the same code talks to MinIO, s3s-fs and AWS.

pub use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone, clap::Args)]
pub struct S3Config {
    /// S3 endpoint URL (MinIO, s3s-fs or AWS).
    #[arg(
        long = "s3-endpoint",
        env = "PMCORE_S3_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    pub endpoint: String,

    /// S3 region.
    #[arg(
        long = "s3-region",
        env = "PMCORE_S3_REGION",
        default_value = "us-east-1"
    )]
    pub region: String,

    /// S3 access key id.
    #[arg(
        long = "s3-access-key",
        env = "PMCORE_S3_ACCESS_KEY",
        default_value = "pmcore"
    )]
    pub access_key: String,

    /// S3 secret access key.
    #[arg(
        long = "s3-secret-key",
        env = "PMCORE_S3_SECRET_KEY",
        default_value = "pmcore-secret",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub secret_key: SecretString,

    /// Bucket where participants drop files to import.
    #[arg(
        long = "s3-inbound-bucket",
        env = "PMCORE_S3_INBOUND_BUCKET",
        default_value = "pmcore-inbound"
    )]
    pub inbound_bucket: String,

    /// Bucket where the platform writes reports.
    #[arg(
        long = "s3-reports-bucket",
        env = "PMCORE_S3_REPORTS_BUCKET",
        default_value = "pmcore-reports"
    )]
    pub reports_bucket: String,
}

impl S3Config {
    pub fn buckets(&self) -> [&str; 2] {
        [&self.inbound_bucket, &self.reports_bucket]
    }
}

pub fn client(config: &S3Config) -> Client {
    let credentials = Credentials::new(
        &config.access_key,
        config.secret_key.expose_secret(),
        None,
        None,
        "pmcore-config",
    );
    let s3 = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&config.endpoint)
        .region(Region::new(config.region.clone()))
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    Client::from_conf(s3)
}

/// Readiness: every configured bucket answers a HEAD.
pub async fn ping(client: &Client, config: &S3Config) -> anyhow::Result<()> {
    for bucket in config.buckets() {
        client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
    }
    Ok(())
}

/// Creates the configured buckets unless they exist (development stacks).
pub async fn ensure_buckets(client: &Client, config: &S3Config) -> anyhow::Result<()> {
    for bucket in config.buckets() {
        if client.head_bucket().bucket(bucket).send().await.is_ok() {
            continue;
        }
        client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "creating bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        tracing::info!(bucket, "bucket created");
    }
    Ok(())
}

/// Creates the buckets, waiting with capped backoff until the S3 server answers or
/// `cancel` fires.
pub async fn ensure_buckets_when_ready(
    client: &Client,
    config: &S3Config,
    cancel: &tokio_util::sync::CancellationToken,
) {
    use backon::{ExponentialBuilder, Retryable};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(5))
        .without_max_times();
    let attempt = (|| ensure_buckets(client, config))
        .retry(backoff)
        .notify(|error, wait| tracing::warn!(%error, ?wait, "bucket creation waits for S3"));
    tokio::select! {
        () = cancel.cancelled() => {}
        result = attempt => if let Err(error) = result { tracing::error!(%error, "bucket creation"); }
    }
}
