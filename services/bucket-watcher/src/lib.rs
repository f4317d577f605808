//! `bucket-watcher`: notices each new object version in the inbound bucket exactly
//! once, records it in the file ledger and publishes `file.received` (or
//! `file.rejected` for a key outside `<organization id>/<kind>/`) through the outbox.

pub mod keys;
pub mod watch;

use std::{net::SocketAddr, time::Duration};

use axum::Router;
use pmcore_db::DbConfig;
use pmcore_kafka::KafkaConfig;
use pmcore_runtime::{Platform, Service, supervise, task};
use pmcore_storage::S3Config;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the HTTP endpoints (`/healthz`, `/readyz`, `/metrics`).
    #[arg(
        long = "listen",
        env = "PMCORE_BUCKET_WATCHER_LISTEN",
        default_value = "0.0.0.0:3012"
    )]
    pub listen: SocketAddr,

    /// How often the inbound bucket is listed, in ms.
    #[arg(
        long = "poll-ms",
        env = "PMCORE_BUCKET_WATCHER_POLL_MS",
        default_value_t = 2000
    )]
    pub poll_ms: u64,

    #[command(flatten)]
    pub database: DbConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub s3: S3Config,
}

#[derive(Debug)]
pub struct App {
    config: Config,
    platform: Platform,
    s3: pmcore_storage::Client,
}

impl App {
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.local_addr()
    }
}

impl Service for App {
    const NAME: &'static str = "bucket-watcher";
    const ABOUT: &'static str = "pmcore bucket-watcher: notices new objects in the inbound bucket";
    type Config = Config;

    fn database(config: &Config) -> &DbConfig {
        &config.database
    }

    fn listen_addr(config: &Config) -> SocketAddr {
        config.listen
    }

    async fn build(config: Config) -> anyhow::Result<Self> {
        let platform = Platform::new(config.listen, &config.database, &config.kafka).await?;
        let s3 = pmcore_storage::client(&config.s3);
        Ok(Self {
            config,
            platform,
            s3,
        })
    }

    async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let readiness = self.platform.readiness().s3(&self.s3, &self.config.s3);
        let watch = watch::run(
            self.platform.pool.clone(),
            self.s3.clone(),
            self.config.s3.inbound_bucket.clone(),
            Duration::from_millis(self.config.poll_ms.max(50)),
            cancel.clone(),
        );
        supervise(
            cancel.clone(),
            vec![
                self.platform.prepare_topics(cancel.clone()),
                self.platform.outbox_relay(cancel.clone()),
                task(watch),
                self.platform.serve(Router::new(), readiness, cancel),
            ],
        )
        .await
    }
}
