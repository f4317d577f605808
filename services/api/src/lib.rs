//! `api`: the REST API (programs, DERs, gateways, enrollments, dispatch events) and the
//! OAuth2 token endpoint. Every change commits with its event through the outbox.

pub mod accuracy;
pub mod auth;
pub mod baselines;
pub mod ders;
pub mod dispatch;
pub mod enrollments;
pub use pmcore_web::{error, extract, limits, pagination};
pub mod files;
pub mod gateways;
pub mod openapi;
pub mod organizations;
pub mod programs;
pub mod settlements;
pub mod state;
pub mod telemetry;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use backon::{ExponentialBuilder, Retryable};
use pmcore_db::DbConfig;
use pmcore_kafka::KafkaConfig;
use pmcore_runtime::{Platform, Service, supervise, task};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{auth::tokens::Tokens, limits::Limits, state::AppState};

pub use pmcore_web::BODY_LIMIT_BYTES;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the REST API.
    #[arg(
        long = "listen",
        env = "PMCORE_API_LISTEN",
        default_value = "0.0.0.0:3001"
    )]
    pub listen: SocketAddr,

    /// Where `/healthz`, `/readyz` and `/metrics` answer: apart from the REST API, on
    /// loopback unless set otherwise (e.g. `0.0.0.0:9101` for a scraper on an
    /// internal network). They tell what the service depends on, and each readiness
    /// check costs a round trip to every dependency.
    #[arg(
        long = "ops-listen",
        env = "PMCORE_API_OPS_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    pub ops_listen: Option<SocketAddr>,

    /// Key that signs and verifies access tokens (HS256), at least 32 bytes. Every
    /// api instance, and every service that checks tokens, needs the same key. When
    /// unset a random one is made, so tokens die with the process.
    #[arg(
        long = "jwt-secret",
        env = "PMCORE_AUTH_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<SecretString>,

    /// Lifetime of an access token, in seconds.
    #[arg(
        long = "token-ttl-secs",
        env = "PMCORE_AUTH_TOKEN_TTL_SECS",
        default_value_t = 3600
    )]
    pub token_ttl_secs: u64,

    /// Sustained requests per second allowed to one client.
    #[arg(
        long = "rate-limit-per-second",
        env = "PMCORE_API_RATE_LIMIT_PER_SECOND",
        default_value_t = 200
    )]
    pub rate_per_second: u32,

    /// Requests one client may burst above its sustained rate.
    #[arg(
        long = "rate-limit-burst",
        env = "PMCORE_API_RATE_LIMIT_BURST",
        default_value_t = 400
    )]
    pub rate_burst: u32,

    /// Name of the utility organization the bootstrap admin belongs to.
    #[arg(
        long = "bootstrap-organization",
        env = "PMCORE_BOOTSTRAP_ORGANIZATION",
        default_value = "Utility"
    )]
    pub bootstrap_organization: String,

    /// Id of the bootstrap admin client made on a fresh install (random when unset).
    #[arg(long = "bootstrap-client-id", env = "PMCORE_BOOTSTRAP_CLIENT_ID")]
    pub bootstrap_client_id: Option<Uuid>,

    /// Its secret; when unset one is generated and written once to
    /// `--bootstrap-secret-file` (never to the log).
    #[arg(
        long = "bootstrap-client-secret",
        env = "PMCORE_BOOTSTRAP_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub bootstrap_client_secret: Option<SecretString>,

    /// Where a generated bootstrap secret is written (created with mode 0600; an
    /// existing file is never overwritten, and the client is not created then).
    #[arg(
        long = "bootstrap-secret-file",
        env = "PMCORE_BOOTSTRAP_SECRET_FILE",
        default_value = "pmcore-bootstrap-admin.json"
    )]
    pub bootstrap_secret_file: std::path::PathBuf,

    /// Seconds between the summaries of refused token requests (one event each, only
    /// when some were refused).
    #[arg(
        long = "refused-logins-interval-s",
        env = "PMCORE_API_REFUSED_LOGINS_INTERVAL_S",
        default_value_t = 60
    )]
    pub refused_logins_interval_s: u64,

    #[command(flatten)]
    pub oidc: pmcore_web::oidc::OidcConfig,

    #[command(flatten)]
    pub database: DbConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    /// The reports bucket, for the download links the api signs.
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
            jwt_secret: None,
            token_ttl_secs: 3600,
            rate_per_second: 200,
            rate_burst: 400,
            bootstrap_organization: "Utility".to_owned(),
            bootstrap_client_id: None,
            bootstrap_client_secret: None,
            bootstrap_secret_file: "pmcore-bootstrap-admin.json".into(),
            refused_logins_interval_s: 60,
            oidc: pmcore_web::oidc::OidcConfig::disabled(),
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
    state: AppState,
}

impl App {
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.local_addr()
    }

    /// Where `/healthz`, `/readyz` and `/metrics` answer.
    pub fn ops_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.ops_addr()
    }

    fn router(&self) -> Router {
        pmcore_web::openapi::serve(openapi::routes(), env!("CARGO_PKG_VERSION"))
            .with_state(self.state.clone())
    }
}

impl Service for App {
    const NAME: &'static str = "api";
    const ABOUT: &'static str =
        "pmcore api: REST API for programs, DERs, gateways, enrollments and dispatch events";
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
        let key = match &config.jwt_secret {
            Some(secret) => {
                let key = secret.expose_secret().as_bytes().to_vec();
                anyhow::ensure!(
                    key.len() >= 32,
                    "PMCORE_AUTH_JWT_SECRET must be at least 32 bytes"
                );
                key
            }
            None => {
                tracing::warn!(
                    "PMCORE_AUTH_JWT_SECRET is not set: using a random key; tokens will not survive a restart"
                );
                auth::secrets::generate().into_bytes()
            }
        };
        let platform = Platform::new(config.listen, &config.database, &config.kafka)
            .await?
            .with_ops(config.ops_listen)
            .await?;
        let state = AppState {
            pool: platform.pool.clone(),
            tokens: Arc::new(Tokens::new(
                &key,
                Duration::from_secs(config.token_ttl_secs),
            )),
            limits: Arc::new(Limits::new(config.rate_per_second, config.rate_burst)),
            oidc: pmcore_web::oidc::Oidc::new(&config.oidc, platform.pool.clone())?.map(Arc::new),
            disabled: Arc::new(state::DisabledClients::default()),
            refusals: Arc::default(),
            reports: state::Reports {
                client: pmcore_storage::link_client(&config.s3),
                bucket: config.s3.reports_bucket.clone(),
                inbound_bucket: config.s3.inbound_bucket.clone(),
            },
        };
        Ok(Self {
            config,
            platform,
            state,
        })
    }

    async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        // Ready once the bootstrap admin exists: a fresh install's first caller (the
        // seed, an operator's script) waits for /readyz and then asks for its token.
        let admin = pmcore_runtime::Step::default();
        let readiness = self.platform.readiness().step("bootstrap", &admin);
        let router = self.router();
        let bootstrap = bootstrap(
            self.state.clone(),
            self.config.clone(),
            admin,
            cancel.clone(),
        );
        let housekeeping = self.state.limits.clone().forget_idle_until(cancel.clone());
        let disabled = watch_disabled(self.state.clone(), cancel.clone());
        let refusals = auth::refusals::run(
            self.state.refusals.clone(),
            self.state.pool.clone(),
            Duration::from_secs(self.config.refused_logins_interval_s.max(1)),
            cancel.clone(),
        );
        supervise(
            cancel.clone(),
            vec![
                self.platform.prepare_topics(cancel.clone()),
                self.platform.outbox_relay(cancel.clone()),
                Box::pin(bootstrap),
                task(housekeeping),
                Box::pin(disabled),
                Box::pin(async move {
                    refusals.await;
                    Ok(())
                }),
                self.platform.serve(router, readiness, cancel),
            ],
        )
        .await
    }
}

/// Creates the bootstrap admin once Postgres answers.
async fn bootstrap(
    state: AppState,
    config: Config,
    done: pmcore_runtime::Step,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times();
    let attempt = (|| auth::ensure_bootstrap_client(&state.pool, &config))
        .retry(backoff)
        .notify(|error, wait| tracing::warn!(%error, ?wait, "bootstrap client waits for Postgres"));
    tokio::select! {
        () = cancel.cancelled() => {}
        result = attempt => { result?; done.done(); }
    }
    Ok(())
}

/// Keeps the set of disabled clients current (a client disabled through another
/// instance is refused here within this period).
async fn watch_disabled(state: AppState, cancel: CancellationToken) -> anyhow::Result<()> {
    loop {
        if let Err(error) = state.disabled.refresh(&state.pool).await {
            tracing::debug!(%error, "refreshing disabled clients");
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
