//! `worker`: Background processing: enrollment eligibility, file imports, telemetry persistence, baselines, performance and settlement. This foundation checks its dependencies, creates the buckets and publishes its outbox.

pub mod anomalies;
pub mod command_acks;
pub mod eligibility;
pub mod imports;
pub mod settlement;
pub mod telemetry;

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use pmcore_db::{DbConfig, inbox::Inbox};
use pmcore_events::catalog;
use pmcore_kafka::{
    KafkaConfig,
    consumer::{self, ConsumerSpec},
};
use pmcore_runtime::{
    Platform, Service,
    clock::{self, SharedClock},
    supervise, task,
};
use pmcore_storage::S3Config;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the HTTP endpoints (`/healthz`, `/readyz`, `/metrics`).
    #[arg(
        long = "listen",
        env = "PMCORE_WORKER_LISTEN",
        default_value = "0.0.0.0:3010"
    )]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DbConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub s3: S3Config,

    #[command(flatten)]
    pub telemetry: telemetry::StoreConfig,

    #[command(flatten)]
    pub settlement: settlement::SettleConfig,

    #[command(flatten)]
    pub imports: imports::ImportConfig,
}

#[derive(Debug)]
pub struct App {
    config: Config,
    platform: Platform,
    s3: pmcore_storage::Client,
    clock: SharedClock,
}

impl App {
    /// The worker reading time from `clock` (tests move it instead of sleeping).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        let platform = Platform::new(config.listen, &config.database, &config.kafka).await?;
        let s3 = pmcore_storage::client(&config.s3);
        Ok(Self {
            config,
            platform,
            s3,
            clock,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.local_addr()
    }
}

impl Service for App {
    const NAME: &'static str = "worker";
    const ABOUT: &'static str =
        "pmcore worker: imports, eligibility, telemetry persistence, baselines and settlement";
    type Config = Config;

    fn database(config: &Config) -> &DbConfig {
        &config.database
    }

    fn listen_addr(config: &Config) -> SocketAddr {
        config.listen
    }

    async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, clock::system()).await
    }

    async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let readiness = self.platform.readiness().s3(&self.s3, &self.config.s3);
        let eligibility = consumer::run(
            self.platform.kafka.clone(),
            self.platform.pool.clone(),
            ConsumerSpec {
                group: eligibility::CONSUMER_GROUP.to_owned(),
                topics: vec![catalog::ENROLLMENTS.name],
                inbox: Inbox::Pm,
                pace: consumer::Pace::Background,
            },
            Arc::new(eligibility::Eligibility),
            cancel.clone(),
        );
        let acks = consumer::run(
            self.platform.kafka.clone(),
            self.platform.pool.clone(),
            ConsumerSpec {
                group: command_acks::CONSUMER_GROUP.to_owned(),
                topics: vec![catalog::COMMAND_ACKS.name],
                inbox: Inbox::Pm,
                pace: consumer::Pace::Prompt,
            },
            Arc::new(command_acks::RecordAcks),
            cancel.clone(),
        );
        let telemetry = telemetry::run(
            self.platform.kafka.clone(),
            self.platform.pool.clone(),
            self.config.telemetry.clone(),
            cancel.clone(),
        );
        let queue_settlements = consumer::run(
            self.platform.kafka.clone(),
            self.platform.pool.clone(),
            ConsumerSpec {
                group: settlement::CONSUMER_GROUP.to_owned(),
                topics: vec![catalog::DISPATCH_EVENTS.name],
                inbox: Inbox::Pm,
                pace: consumer::Pace::Background,
            },
            settlement::handler(&self.config.settlement),
            cancel.clone(),
        );
        let imports = consumer::run(
            self.platform.kafka.clone(),
            self.platform.pool.clone(),
            ConsumerSpec {
                group: imports::CONSUMER_GROUP.to_owned(),
                topics: vec![catalog::FILES.name],
                inbox: Inbox::Pm,
                pace: consumer::Pace::Background,
            },
            imports::handler(
                self.platform.pool.clone(),
                self.s3.clone(),
                self.config.s3.reports_bucket.clone(),
                self.config.imports.clone(),
            ),
            cancel.clone(),
        );
        let settle = settlement::run(
            self.platform.pool.clone(),
            self.s3.clone(),
            self.config.s3.reports_bucket.clone(),
            self.clock.clone(),
            self.config.settlement.clone(),
            cancel.clone(),
        );
        let silence = anomalies::watch_silence(
            self.platform.pool.clone(),
            self.config.telemetry.anomalies.clone(),
            cancel.clone(),
        );
        supervise(
            cancel.clone(),
            vec![
                self.platform.prepare_topics(cancel.clone()),
                self.platform.outbox_relay(cancel.clone()),
                prepare_buckets(self.s3.clone(), self.config.s3.clone(), cancel.clone()),
                task(eligibility),
                task(acks),
                task(telemetry),
                task(silence),
                task(queue_settlements),
                task(settle),
                task(imports),
                self.platform.serve(Router::new(), readiness, cancel),
            ],
        )
        .await
    }
}

/// Creates the inbound and reports buckets once the S3 server answers.
fn prepare_buckets(
    client: pmcore_storage::Client,
    config: S3Config,
    cancel: CancellationToken,
) -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        pmcore_storage::ensure_buckets_when_ready(&client, &config, &cancel).await;
        Ok(())
    })
}
