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

    /// Endpoint in the download links the api hands out, when clients reach the S3
    /// server by another address than the services do (e.g. `http://localhost:9000`
    /// outside Docker). Defaults to the endpoint.
    #[arg(long = "s3-public-endpoint", env = "PMCORE_S3_PUBLIC_ENDPOINT")]
    pub public_endpoint: Option<String>,
}

impl Default for S3Config {
    /// The command line's defaults.
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:9000".to_owned(),
            region: "us-east-1".to_owned(),
            access_key: "pmcore".to_owned(),
            secret_key: SecretString::from("pmcore-secret"),
            inbound_bucket: "pmcore-inbound".to_owned(),
            reports_bucket: "pmcore-reports".to_owned(),
            public_endpoint: None,
        }
    }
}

impl S3Config {
    pub fn buckets(&self) -> [&str; 2] {
        [&self.inbound_bucket, &self.reports_bucket]
    }
}

pub fn client(config: &S3Config) -> Client {
    client_at(config, &config.endpoint)
}

/// A client whose presigned links point at the public endpoint.
pub fn link_client(config: &S3Config) -> Client {
    client_at(
        config,
        config
            .public_endpoint
            .as_deref()
            .unwrap_or(&config.endpoint),
    )
}

/// A short-lived GET link to `key` (signing only; no request is made).
pub async fn presigned_get(
    client: &Client,
    bucket: &str,
    key: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)?;
    let request = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .presigned(config);
    Ok(request
        .await
        .map_err(|e| presign_error(key, e))?
        .uri()
        .to_owned())
}

/// A short-lived PUT link to `key` (signing only). Content type and checksums are
/// not signed, so any client (curl, a browser, an SDK) can use it as it is.
pub async fn presigned_put(
    client: &Client,
    bucket: &str,
    key: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)?;
    let request = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .presigned(config);
    Ok(request
        .await
        .map_err(|e| presign_error(key, e))?
        .uri()
        .to_owned())
}

fn presign_error<E: std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    key: &str,
    error: aws_sdk_s3::error::SdkError<E, R>,
) -> anyhow::Error {
    anyhow::anyhow!(
        "presigning {key}: {}",
        aws_sdk_s3::error::DisplayErrorContext(error)
    )
}

fn client_at(config: &S3Config, endpoint: &str) -> Client {
    let credentials = Credentials::new(
        &config.access_key,
        config.secret_key.expose_secret(),
        None,
        None,
        "pmcore-config",
    );
    let s3 = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
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
