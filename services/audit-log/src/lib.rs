//! `audit-log`: reads every domain topic and appends what happened, who did it and
//! when to a transparency log (RFC 6962 Merkle tree, signed C2SP checkpoints), and
//! serves it: entries, checkpoints, proofs and verification (port 3003).

pub mod export;
pub mod http;
pub mod log;
mod recorder;
pub mod store;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use pmcore_db::{DbConfig, inbox::Inbox};
use pmcore_events::catalog;
use pmcore_kafka::{
    KafkaConfig,
    consumer::{self, ConsumerSpec},
};
use pmcore_runtime::{Platform, Service, supervise, task};
use pmcore_web::{limits::Limits, tokens::Tokens};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

pub use recorder::Recorder;

use crate::{http::AuditState, log::note::CheckpointSigner};

pub const CONSUMER_GROUP: &str = "pmcore-audit-log";

/// Records appended per transaction when the topics have a backlog.
const BATCH: usize = 500;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the audit API.
    #[arg(
        long = "listen",
        env = "PMCORE_AUDIT_LOG_LISTEN",
        default_value = "0.0.0.0:3003"
    )]
    pub listen: SocketAddr,

    /// Where `/healthz`, `/readyz` and `/metrics` answer: apart from the audit API, on
    /// loopback unless set otherwise (e.g. `0.0.0.0:9103` for a scraper on an
    /// internal network). They tell what the service depends on, and each readiness
    /// check costs a round trip to every dependency.
    #[arg(
        long = "ops-listen",
        env = "PMCORE_AUDIT_LOG_OPS_LISTEN",
        default_value = "127.0.0.1:9103"
    )]
    pub ops_listen: Option<SocketAddr>,

    /// Consumer group; change it only to replay the trail into a fresh schema.
    #[arg(long = "consumer-group", env = "PMCORE_AUDIT_LOG_GROUP", default_value = CONSUMER_GROUP)]
    pub group: String,

    /// The key that signs checkpoints, as a C2SP signed-note signer key
    /// (`PRIVATE+KEY+<origin>+<key id>+<base64>`; `audit-tool keygen <origin>` makes
    /// one). When unset a random one is made: its checkpoints cannot be verified
    /// after a restart.
    #[arg(
        long = "signing-key",
        env = "PMCORE_AUDIT_LOG_SIGNING_KEY",
        hide_env_values = true
    )]
    pub signing_key: Option<SecretString>,

    /// Origin line of the checkpoints when the key is generated.
    #[arg(
        long = "origin",
        env = "PMCORE_AUDIT_LOG_ORIGIN",
        default_value = "pmcore.local/audit-log"
    )]
    pub origin: String,

    /// Seconds between checkpoints (one is signed only when the log grew).
    #[arg(
        long = "checkpoint-interval-s",
        env = "PMCORE_AUDIT_LOG_CHECKPOINT_INTERVAL_S",
        default_value_t = 60
    )]
    pub checkpoint_interval_s: u64,

    /// The api's token key (HS256): the audit API accepts the api's tokens.
    #[arg(
        long = "jwt-secret",
        env = "PMCORE_AUTH_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<SecretString>,

    /// Sustained requests per second allowed to one client.
    #[arg(
        long = "rate-limit-per-second",
        env = "PMCORE_AUDIT_LOG_RATE_LIMIT_PER_SECOND",
        default_value_t = 200
    )]
    pub rate_per_second: u32,

    /// Requests one client may burst above its sustained rate.
    #[arg(
        long = "rate-limit-burst",
        env = "PMCORE_AUDIT_LOG_RATE_LIMIT_BURST",
        default_value_t = 400
    )]
    pub rate_burst: u32,

    /// An external OIDC provider whose tokens the audit API accepts, as the api does.
    #[command(flatten)]
    pub oidc: pmcore_web::oidc::OidcConfig,

    #[command(flatten)]
    pub database: DbConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    /// Bytes per part of an export's upload (at least 5 MiB: S3's smallest part).
    #[arg(
        long = "export-part-bytes",
        env = "PMCORE_AUDIT_LOG_EXPORT_PART_BYTES",
        default_value_t = 8 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(5 * 1024 * 1024..=1024 * 1024 * 1024)
    )]
    pub export_part_bytes: u64,

    /// The reports bucket, where exports go.
    #[command(flatten)]
    pub s3: pmcore_storage::S3Config,
}

impl Config {
    /// Defaults for everything but where to listen and what to connect to.
    pub fn new(listen: SocketAddr, database: DbConfig, kafka: KafkaConfig) -> Self {
        Self {
            listen,
            // Tests and embedders serve them on the service's own port.
            ops_listen: None,
            group: CONSUMER_GROUP.to_owned(),
            signing_key: None,
            origin: "pmcore.local/audit-log".to_owned(),
            checkpoint_interval_s: 60,
            jwt_secret: None,
            rate_per_second: 200,
            rate_burst: 400,
            oidc: pmcore_web::oidc::OidcConfig::disabled(),
            export_part_bytes: 8 * 1024 * 1024,
            database,
            kafka,
            s3: pmcore_storage::S3Config::default(),
        }
    }
}

#[derive(Debug)]
pub struct App {
    config: Config,
    platform: Platform,
    state: AuditState,
}

impl App {
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.local_addr()
    }

    /// Where `/healthz`, `/readyz` and `/metrics` answer.
    pub fn ops_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.ops_addr()
    }

    pub fn verifier_key(&self) -> &str {
        self.state.signer.verifier_key()
    }

    fn router(&self) -> Router {
        pmcore_web::openapi::serve(http::openapi::routes(), env!("CARGO_PKG_VERSION"))
            .with_state(self.state.clone())
    }
}

impl Service for App {
    const NAME: &'static str = "audit-log";
    const ABOUT: &'static str = "pmcore audit-log: the append-only trail of every domain event";
    const MIGRATIONS: &'static [pmcore_db::migrate::Set] = &[
        pmcore_db::migrate::Set::Platform,
        pmcore_db::migrate::Set::Audit,
    ];
    type Config = Config;

    fn database(config: &Config) -> &DbConfig {
        &config.database
    }

    fn listen_addr(config: &Config) -> SocketAddr {
        config.listen
    }

    fn ops_addr(config: &Config) -> SocketAddr {
        config.ops_listen.unwrap_or(config.listen)
    }

    async fn build(config: Config) -> anyhow::Result<Self> {
        let signer = match &config.signing_key {
            Some(key) => CheckpointSigner::from_key(key.expose_secret())?,
            None => {
                tracing::warn!(
                    "PMCORE_AUDIT_LOG_SIGNING_KEY is not set: checkpoints are signed with a random key"
                );
                CheckpointSigner::generate(&config.origin)?.1
            }
        };
        tracing::info!(verifier_key = signer.verifier_key(), "checkpoint key");
        let jwt = match &config.jwt_secret {
            Some(secret) => secret.expose_secret().as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "PMCORE_AUTH_JWT_SECRET is not set: no token verifies, every request is refused"
                );
                rand::random::<[u8; 32]>().to_vec()
            }
        };
        let platform = Platform::new(config.listen, &config.database, &config.kafka)
            .await?
            .with_ops(config.ops_listen)
            .await?;
        let state = AuditState {
            pool: platform.pool.clone(),
            // Verification only: the lifetime is the issuer's business.
            tokens: Arc::new(Tokens::new(&jwt, Duration::from_secs(3600))),
            limits: Arc::new(Limits::new(config.rate_per_second, config.rate_burst)),
            oidc: pmcore_web::oidc::Oidc::new(&config.oidc, platform.pool.clone())?.map(Arc::new),
            signer: Arc::new(signer),
            storage: http::Storage {
                client: pmcore_storage::client(&config.s3),
                links: pmcore_storage::link_client(&config.s3),
                bucket: config.s3.reports_bucket.clone(),
            },
            exports: Arc::new(tokio::sync::Notify::new()),
        };
        Ok(Self {
            config,
            platform,
            state,
        })
    }

    async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let spec = ConsumerSpec {
            group: self.config.group.clone(),
            topics: catalog::domain_topics().map(|t| t.name).collect(),
            inbox: Inbox::Audit,
            pace: consumer::Pace::Background,
        };
        let pool = self.platform.pool.clone();
        let kafka = self.platform.kafka.clone();
        let consume_cancel = cancel.clone();
        let consume = async move {
            // Entries recorded before the log existed get their leaves first.
            match store::backfill(&pool, 5000).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "older entries added to the log"),
                Err(error) => tracing::warn!(error = format!("{error:#}"), "backfilling the log"),
            }
            consumer::run_batched(kafka, pool, spec, Arc::new(Recorder), BATCH, consume_cancel)
                .await;
        };
        let checkpoints = http::checkpoints::run(
            self.platform.pool.clone(),
            self.state.signer.clone(),
            Duration::from_secs(self.config.checkpoint_interval_s.max(1)),
            self.config.kafka.database_timeout(),
            cancel.clone(),
        );
        let exports = export::Runner {
            pool: self.platform.pool.clone(),
            storage: self.state.storage.clone(),
            part_bytes: usize::try_from(self.config.export_part_bytes)?,
            wake: self.state.exports.clone(),
        }
        .run(cancel.clone());
        let readiness = self.platform.readiness();
        let router = self.router();
        supervise(
            cancel.clone(),
            vec![
                self.platform.prepare_topics(cancel.clone()),
                task(consume),
                task(checkpoints),
                task(self.state.limits.clone().forget_idle_until(cancel.clone())),
                self.platform
                    .inbox_pruner(pmcore_db::inbox::Inbox::Audit, cancel.clone()),
                task(exports),
                self.platform.serve(router, readiness, cancel),
            ],
        )
        .await
    }
}
