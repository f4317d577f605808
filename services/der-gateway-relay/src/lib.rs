//! `der-gateway-relay`: WebSocket sessions of edge gateways, bridged to Kafka.
//!
//! - [`session`]: one gateway's session (`/v1/gateway`), protocol in [`protocol`].
//! - [`telemetry`]: batches checked and produced to `der.telemetry.v1`, acknowledged
//!   after the broker's acknowledgement.
//! - [`commands`]: `der.commands.v1` kept in Postgres, delivered by whichever
//!   instance holds the gateway.
//! - [`presence`]: online/offline with events through the outbox.

pub mod auth;
pub mod commands;
pub mod hub;
pub mod presence;
pub mod protocol;
pub mod rotations;
pub mod session;
pub mod telemetry;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{ConnectInfo, State, WebSocketUpgrade},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use pmcore_db::{DbConfig, inbox::Inbox};
use pmcore_events::catalog;
use pmcore_kafka::{
    KafkaConfig,
    consumer::{self, ConsumerSpec},
};
use pmcore_runtime::{Platform, Service, supervise, task};
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, Limits};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the gateway WebSocket (`/v1/gateway`).
    #[arg(
        long = "listen",
        env = "PMCORE_RELAY_LISTEN",
        default_value = "0.0.0.0:3005"
    )]
    pub listen: SocketAddr,

    /// Where `/healthz`, `/readyz` and `/metrics` answer: apart from the gateway endpoint, on
    /// loopback unless set otherwise (e.g. `0.0.0.0:9105` for a scraper on an
    /// internal network). They tell what the service depends on, and each readiness
    /// check costs a round trip to every dependency.
    #[arg(
        long = "ops-listen",
        env = "PMCORE_RELAY_OPS_LISTEN",
        default_value = "127.0.0.1:9105"
    )]
    pub ops_listen: Option<SocketAddr>,

    /// Largest WebSocket message a gateway may send, in bytes; a larger one closes
    /// the session with 1009.
    #[arg(
        long = "max-frame-bytes",
        env = "PMCORE_RELAY_MAX_FRAME_BYTES",
        default_value_t = 1 << 20
    )]
    pub max_frame_bytes: usize,

    /// Frames per second a gateway may send (bursts of twice that).
    #[arg(
        long = "frames-per-second",
        env = "PMCORE_RELAY_FRAMES_PER_SECOND",
        default_value_t = 50
    )]
    pub frames_per_second: u32,

    /// Seconds without any frame from a gateway before its session is closed.
    #[arg(
        long = "heartbeat-timeout-s",
        env = "PMCORE_RELAY_HEARTBEAT_TIMEOUT_S",
        default_value_t = 30
    )]
    pub heartbeat_timeout_s: u64,

    /// Gateway secrets verified at once (argon2id, 19 MiB and a core each); 0 = one per
    /// core. A hello beyond waits up to the hello timeout, then is closed with 1013.
    #[arg(
        long = "max-verifications",
        env = "PMCORE_RELAY_MAX_VERIFICATIONS",
        default_value_t = 0
    )]
    pub max_verifications: usize,

    /// New gateway connections per second from one source address (bursts of ten
    /// times that); beyond, the upgrade is answered 429 before any work.
    #[arg(
        long = "hellos-per-second-per-address",
        env = "PMCORE_RELAY_HELLOS_PER_SECOND_PER_ADDRESS",
        default_value_t = 50
    )]
    pub hellos_per_second_per_address: u32,

    /// Seconds a frame may take to reach a gateway's socket; a gateway that stops
    /// reading has its session ended after that, rather than holding it open.
    #[arg(
        long = "send-timeout-s",
        env = "PMCORE_RELAY_SEND_TIMEOUT_S",
        default_value_t = 10
    )]
    pub send_timeout_s: u64,

    #[command(flatten)]
    pub database: DbConfig,

    #[command(flatten)]
    pub kafka: KafkaConfig,
}

#[derive(Debug)]
pub struct App {
    platform: Platform,
    config: Config,
}

impl App {
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.local_addr()
    }

    /// Where `/healthz`, `/readyz` and `/metrics` answer.
    pub fn ops_addr(&self) -> anyhow::Result<SocketAddr> {
        self.platform.ops_addr()
    }
}

impl Service for App {
    const NAME: &'static str = "der-gateway-relay";
    const ABOUT: &'static str = "pmcore der-gateway-relay: WebSocket sessions of edge gateways";
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
        let platform = Platform::new(config.listen, &config.database, &config.kafka)
            .await?
            .with_ops(config.ops_listen)
            .await?;
        Ok(Self { platform, config })
    }

    async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let rotations_ready = pmcore_runtime::Step::default();
        let readiness = self
            .platform
            .readiness()
            .step("rotations", &rotations_ready);
        let limits = Limits {
            max_frame_bytes: self.config.max_frame_bytes,
            frames_per_second: self.config.frames_per_second,
            heartbeat_timeout: Duration::from_secs(self.config.heartbeat_timeout_s.max(1)),
            max_errors: 20,
            hello_timeout: Duration::from_secs(10),
            max_verifications: match self.config.max_verifications {
                0 => std::thread::available_parallelism().map_or(2, usize::from),
                n => n,
            },
            hellos_per_second_per_address: self.config.hellos_per_second_per_address,
            send_timeout: Duration::from_secs(self.config.send_timeout_s.max(1)),
        };
        let producer = telemetry_producer(&self.platform.kafka)?;
        let hub = Hub::new(
            self.platform.pool.clone(),
            self.platform.kafka.clone(),
            producer,
            limits,
            // Sessions close on shutdown before the listener stops accepting.
            cancel.child_token(),
        );
        // A fan-out arrives as a burst: up to 500 commands per transaction.
        let store_commands = consumer::run_batched(
            self.platform.kafka.clone(),
            self.platform.pool.clone(),
            ConsumerSpec {
                group: commands::CONSUMER_GROUP.to_owned(),
                topics: vec![catalog::COMMANDS.name],
                inbox: Inbox::Pm,
                pace: consumer::Pace::Prompt,
            },
            Arc::new(commands::StoreCommands),
            500,
            cancel.clone(),
        );
        let listener = commands::listen(hub.clone());
        let rotations = rotations::watch(hub.clone(), rotations_ready);
        let forget = {
            let (hub, cancel) = (hub.clone(), cancel.clone());
            // Every address that ever connected is a key of the hello limiter.
            async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(60)) => hub.hellos.retain_recent(),
                    }
                }
            }
        };
        let (sessions, goodbye) = (hub.tasks.clone(), hub.limits.send_timeout);
        let routes = Router::new()
            .route("/v1/gateway", get(upgrade))
            .with_state(hub);
        let result = supervise(
            cancel.clone(),
            vec![
                self.platform.prepare_topics(cancel.clone()),
                self.platform.outbox_relay(cancel.clone()),
                task(store_commands),
                task(listener),
                task(rotations),
                task(forget),
                self.platform.serve(routes, readiness, cancel),
            ],
        )
        .await;
        // Upgraded connections live outside the server's graceful shutdown: wait for
        // each session's close frame and presence event, bounded by one send timeout.
        sessions.close();
        if tokio::time::timeout(goodbye + Duration::from_secs(5), sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = sessions.len(),
                "sessions still open at exit; their gateways show online until they reconnect"
            );
        }
        result
    }
}

/// Telemetry goes straight to the broker: batched for throughput (the gateway waits
/// for the ack anyway, a few ms of linger cost it nothing), and with a bounded queue:
/// when the broker is slow, gateways are told to resend (`unavailable`) instead of
/// the relay buffering up to librdkafka's default 1 GiB. Readings are rows keyed by
/// `(der_id, ts)`, so their order on the topic does not matter: without idempotence
/// (the embedded stack) five requests stay in flight rather than one.
fn telemetry_producer(config: &KafkaConfig) -> anyhow::Result<pmcore_kafka::Producer> {
    let mut producer = pmcore_kafka::idempotent_producer_config(config);
    producer.set("queue.buffering.max.kbytes", "131072");
    if !config.idempotence {
        producer.set("max.in.flight.requests.per.connection", "5");
    }
    pmcore_kafka::Producer::new(&producer)
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    if hub.hellos.check_key(&peer.ip()).is_err() {
        metrics::counter!("pmcore_relay_rejected_total", "code" => "hello_rate").increment(1);
        tracing::warn!(peer = %peer.ip(), "too many new gateway connections from one address");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "too many new connections from this address; retry later",
        )
            .into_response();
    }
    let max = hub.limits.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let tasks = hub.tasks.clone();
            tasks.track_future(session::run(hub, socket))
        })
}
