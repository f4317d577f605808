//! `messaging`: notifications to participants and integrators. Domain events and
//! requests become messages for the organizations they concern; each is delivered to
//! the organization's webhook endpoints (signed per Standard Webhooks) and email
//! contacts, retried on a schedule, from a queue in Postgres that any number of
//! instances share. Its API (port 3004) manages endpoints, contacts, templates and
//! the delivery log.

pub mod audience;
pub mod deliver;
pub mod egress;
pub mod http;
pub mod kinds;
pub mod notify;
pub mod render;
pub mod retry;
pub mod sealed;
pub mod signature;
pub mod store;

use std::{net::SocketAddr, sync::Arc, time::Duration};

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
use pmcore_web::{limits::Limits, tokens::Tokens};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::{deliver::Senders, http::MessagingState, notify::Notifier, sealed::SecretsKey};

pub const CONSUMER_GROUP: &str = "pmcore-messaging";

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the messaging API.
    #[arg(
        long = "listen",
        env = "PMCORE_MESSAGING_LISTEN",
        default_value = "0.0.0.0:3004"
    )]
    pub listen: SocketAddr,

    /// Where `/healthz`, `/readyz` and `/metrics` answer: apart from the messaging API, on
    /// loopback unless set otherwise (e.g. `0.0.0.0:9104` for a scraper on an
    /// internal network). They tell what the service depends on, and each readiness
    /// check costs a round trip to every dependency.
    #[arg(
        long = "ops-listen",
        env = "PMCORE_MESSAGING_OPS_LISTEN",
        default_value = "127.0.0.1:9104"
    )]
    pub ops_listen: Option<SocketAddr>,

    /// Consumer group of the domain topics and `messaging.requests.v1`.
    #[arg(long = "consumer-group", env = "PMCORE_MESSAGING_GROUP", default_value = CONSUMER_GROUP)]
    pub group: String,

    /// The key that seals webhook signing secrets at rest: 32 bytes in base64
    /// (`openssl rand -base64 32`). When unset a random one is made, and endpoints
    /// created before a restart can no longer be signed for.
    #[arg(
        long = "secrets-key",
        env = "PMCORE_MESSAGING_SECRETS_KEY",
        hide_env_values = true
    )]
    pub secrets_key: Option<SecretString>,

    /// The api's token key (HS256): the messaging API accepts the api's tokens.
    #[arg(
        long = "jwt-secret",
        env = "PMCORE_AUTH_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<SecretString>,

    /// SMTP server for email: `smtp://host:1025` (plain), `smtp://host:587?tls=required`,
    /// `smtps://user:password@host`. Unset: emails fail and are retried, webhooks go.
    #[arg(long = "smtp-url", env = "PMCORE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretString>,

    /// Sender of the emails.
    #[arg(
        long = "email-from",
        env = "PMCORE_MESSAGING_EMAIL_FROM",
        default_value = "pmcore <notifications@pmcore.local>"
    )]
    pub email_from: String,

    /// Allow webhooks to loopback, private and link-local addresses. For dev stacks
    /// only: otherwise a participant could make the platform call its internal network.
    #[arg(
        long = "allow-private-targets",
        env = "PMCORE_MESSAGING_ALLOW_PRIVATE_TARGETS",
        default_value_t = false
    )]
    pub allow_private_targets: bool,

    /// Longest webhook attempt, connect to last byte (ms).
    #[arg(
        long = "webhook-timeout-ms",
        env = "PMCORE_MESSAGING_WEBHOOK_TIMEOUT_MS",
        default_value_t = 15_000
    )]
    pub webhook_timeout_ms: u64,

    /// Attempts in flight in this instance.
    #[arg(
        long = "max-in-flight",
        env = "PMCORE_MESSAGING_MAX_IN_FLIGHT",
        default_value_t = 64
    )]
    pub max_in_flight: usize,

    /// Attempts in flight to one endpoint or contact, so one slow receiver cannot take
    /// every slot.
    #[arg(
        long = "per-target-in-flight",
        env = "PMCORE_MESSAGING_PER_TARGET_IN_FLIGHT",
        default_value_t = 4
    )]
    pub per_target: i64,

    /// How often to look for due retries (ms) when nothing new wakes the senders.
    #[arg(
        long = "poll-ms",
        env = "PMCORE_MESSAGING_POLL_MS",
        default_value_t = 1000
    )]
    pub poll_ms: u64,

    /// An endpoint whose every attempt failed for this long is disabled (hours).
    #[arg(
        long = "disable-after-hours",
        env = "PMCORE_MESSAGING_DISABLE_AFTER_HOURS",
        default_value_t = 120
    )]
    pub disable_after_hours: i64,

    /// Sustained API requests per second allowed to one client.
    #[arg(
        long = "rate-limit-per-second",
        env = "PMCORE_MESSAGING_RATE_LIMIT_PER_SECOND",
        default_value_t = 100
    )]
    pub rate_per_second: u32,

    /// API requests one client may burst above its sustained rate.
    #[arg(
        long = "rate-limit-burst",
        env = "PMCORE_MESSAGING_RATE_LIMIT_BURST",
        default_value_t = 200
    )]
    pub rate_burst: u32,

    /// An external OIDC provider whose tokens the messaging API accepts, as the api does.
    #[command(flatten)]
    pub oidc: pmcore_web::oidc::OidcConfig,

    #[command(flatten)]
    pub database: DbConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,
}

impl Config {
    /// Defaults for everything but where to listen and what to connect to.
    pub fn new(listen: SocketAddr, database: DbConfig, kafka: KafkaConfig) -> Self {
        Self {
            listen,
            // Tests and embedders serve them on the service's own port.
            ops_listen: None,
            group: CONSUMER_GROUP.to_owned(),
            secrets_key: None,
            jwt_secret: None,
            smtp_url: None,
            email_from: "pmcore <notifications@pmcore.local>".to_owned(),
            allow_private_targets: false,
            webhook_timeout_ms: 15_000,
            max_in_flight: 64,
            per_target: 4,
            poll_ms: 1000,
            disable_after_hours: 120,
            rate_per_second: 100,
            rate_burst: 200,
            oidc: pmcore_web::oidc::OidcConfig::disabled(),
            database,
            kafka,
        }
    }
}

#[derive(Debug)]
pub struct App {
    config: Config,
    platform: Platform,
    state: MessagingState,
    senders: Senders,
}

impl App {
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.local_addr()
    }

    /// Where `/healthz`, `/readyz` and `/metrics` answer.
    pub fn ops_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.ops_addr()
    }

    /// Builds the service on a clock of the caller's (tests move time by hand).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        let secrets = match &config.secrets_key {
            Some(key) => SecretsKey::from_base64(key.expose_secret())?,
            None => {
                tracing::warn!(
                    "PMCORE_MESSAGING_SECRETS_KEY is not set: endpoints made now cannot be signed for after a restart"
                );
                SecretsKey::generate()
            }
        };
        let secrets = Arc::new(secrets);
        let jwt = match &config.jwt_secret {
            Some(secret) => secret.expose_secret().as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "PMCORE_AUTH_JWT_SECRET is not set: no token verifies, every request is refused"
                );
                rand::random::<[u8; 32]>().to_vec()
            }
        };
        let timeout = Duration::from_millis(config.webhook_timeout_ms.max(100));
        let mailer = match &config.smtp_url {
            Some(url) => Some(deliver::email::mailer(url.expose_secret(), timeout)?),
            None => {
                tracing::warn!("PMCORE_SMTP_URL is not set: emails are not sent");
                None
            }
        };
        let from = config
            .email_from
            .parse()
            .map_err(|e| anyhow::anyhow!("PMCORE_MESSAGING_EMAIL_FROM: {e}"))?;
        let platform = Platform::new(config.listen, &config.database, &config.kafka)
            .await?
            .with_ops(config.ops_listen)
            .await?;
        let state = MessagingState {
            pool: platform.pool.clone(),
            // Verification only: the lifetime is the issuer's business.
            tokens: Arc::new(Tokens::new(&jwt, Duration::from_secs(3600))),
            limits: Arc::new(Limits::new(config.rate_per_second, config.rate_burst)),
            oidc: pmcore_web::oidc::Oidc::new(&config.oidc, platform.pool.clone())?.map(Arc::new),
            secrets: secrets.clone(),
            clock: clock.clone(),
            allow_private: config.allow_private_targets,
        };
        let mut senders = Senders::new(
            platform.pool.clone(),
            clock,
            secrets,
            deliver::webhook::client(timeout, config.allow_private_targets)?,
            mailer,
            from,
            config.allow_private_targets,
            // Outlives the longest attempt and the recording after it.
            timeout * 2 + Duration::from_secs(30),
        );
        senders.max_in_flight = config.max_in_flight.max(1);
        senders.per_target = config.per_target.max(1);
        senders.poll = Duration::from_millis(config.poll_ms.max(10));
        senders.disable_after = chrono::Duration::hours(config.disable_after_hours.max(1));
        Ok(Self {
            config,
            platform,
            state,
            senders,
        })
    }

    fn router(&self) -> Router {
        pmcore_web::openapi::serve(http::openapi::routes(), env!("CARGO_PKG_VERSION"))
            .with_state(self.state.clone())
    }
}

/// The topics whose events can become notifications.
pub fn topics() -> Vec<&'static str> {
    [
        catalog::DISPATCH_EVENTS,
        catalog::ENROLLMENTS,
        catalog::SETTLEMENTS,
        catalog::FILES,
        catalog::GATEWAYS,
        catalog::MESSAGING_REQUESTS,
    ]
    .iter()
    .map(|t| t.name)
    .collect()
}

impl Service for App {
    const NAME: &'static str = "messaging";
    const ABOUT: &'static str = "pmcore messaging: webhooks and email to participants";
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
        Self::build_with_clock(config, clock::system()).await
    }

    async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let spec = ConsumerSpec {
            group: self.config.group.clone(),
            topics: topics(),
            inbox: Inbox::Messaging,
            pace: consumer::Pace::Background,
        };
        let notifier = Arc::new(Notifier {
            clock: self.state.clock.clone(),
        });
        let consume = consumer::run(
            self.platform.kafka.clone(),
            self.platform.pool.clone(),
            spec,
            notifier,
            cancel.clone(),
        );
        let send = self.senders.clone().run(cancel.clone());
        let readiness = self.platform.readiness();
        let router = self.router();
        supervise(
            cancel.clone(),
            vec![
                self.platform.prepare_topics(cancel.clone()),
                task(consume),
                task(send),
                task(self.state.limits.clone().forget_idle_until(cancel.clone())),
                self.platform
                    .inbox_pruner(pmcore_db::inbox::Inbox::Messaging, cancel.clone()),
                self.platform.serve(router, readiness, cancel),
            ],
        )
        .await
    }
}
