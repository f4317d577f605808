//! A relay (or two), the worker and gateways of their own per test.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use argon2::{
    Argon2, PasswordHasher,
    password_hash::{SaltString, rand_core::OsRng},
};
use futures::{SinkExt, StreamExt};
use pmcore_der_gateway_relay::{
    App, Config,
    protocol::{GatewayFrame, RelayFrame},
};
use pmcore_events::domain::DerCommand;
use pmcore_kafka::{
    KafkaConfig,
    outbox::{self, EventMeta},
};
use pmcore_runtime::Service;
use pmcore_seed::{
    fleet::{GatewaySpec, SimDer},
    sim::{Gateway, Options, SimError, Stats},
};
use pmcore_testkit::{Running, TestDb, kafka, unique_prefix};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) struct Env {
    pub(crate) db: TestDb,
    pub(crate) kafka: KafkaConfig,
}

impl Env {
    pub(crate) async fn new() -> Self {
        Self::with_kafka(kafka(&unique_prefix())).await
    }

    /// On a broker of the test's own (a `PrivateBroker`, to pause or restart).
    pub(crate) async fn with_kafka(kafka: KafkaConfig) -> Self {
        pmcore_testkit::init_logs();
        Self {
            db: TestDb::new().await.expect("test database"),
            kafka,
        }
    }

    pub(crate) async fn relay(&self) -> Running {
        self.relay_with(|_| {}).await
    }

    pub(crate) async fn relay_with(&self, tweak: impl FnOnce(&mut Config)) -> Running {
        let mut config = Config {
            listen: ([127, 0, 0, 1], 0).into(),
            ops_listen: None,
            max_frame_bytes: 1 << 20,
            frames_per_second: 50,
            heartbeat_timeout_s: 30,
            max_verifications: 0,
            hellos_per_second_per_address: 50,
            send_timeout_s: 10,
            database: self.db.config_for("relay"),
            kafka: self.kafka.clone(),
        };
        tweak(&mut config);
        let app = App::build(config).await.expect("relay builds");
        let addr = app.local_addr().expect("bound");
        let running = Running::start(app, addr).await;
        running.ready(Duration::from_secs(60)).await;
        running
    }

    pub(crate) async fn worker(&self) -> Running {
        let config = pmcore_worker::Config {
            listen: ([127, 0, 0, 1], 0).into(),
            database: self.db.config_for("worker"),
            kafka: self.kafka.clone(),
            s3: pmcore_testkit::s3(),
            telemetry: pmcore_worker::telemetry::StoreConfig {
                batch_wait_ms: 50,
                ..Default::default()
            },
            // Settled as soon as an event ends, looked for often.
            settlement: pmcore_worker::settlement::SettleConfig {
                delay_s: 0,
                tick_ms: 200,
                ..Default::default()
            },
            imports: Default::default(),
        };
        let app = pmcore_worker::App::build(config)
            .await
            .expect("worker builds");
        let addr = app.local_addr().expect("bound");
        let running = Running::start(app, addr).await;
        running.ready(Duration::from_secs(60)).await;
        running
    }

    /// An organization, a gateway with a known secret and `ders` DERs of 5 kW.
    pub(crate) async fn gateway(&self, ders: usize) -> GatewaySpec {
        let pool = &self.db.pool;
        let org = Uuid::now_v7();
        sqlx::query("insert into pm.organization (id, name, kind) values ($1, $2, 'aggregator')")
            .bind(org)
            .bind(format!("org-{org}"))
            .execute(pool)
            .await
            .expect("organization");
        let id = Uuid::now_v7();
        let secret = format!("secret-{id}");
        let hash = Argon2::default()
            .hash_password(secret.as_bytes(), &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        sqlx::query(
            "insert into pm.gateway (id, organization_id, name, secret_hash) values ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(org)
        .bind(format!("gw-{id}"))
        .bind(hash)
        .execute(pool)
        .await
        .expect("gateway");
        let mut sim_ders = Vec::new();
        for i in 0..ders {
            let der = Uuid::now_v7();
            let der_type = ["thermostat", "ci_load", "battery"][i % 3];
            sqlx::query(
                "insert into pm.der (id, organization_id, gateway_id, der_type, nameplate_kw, feeder)
                 values ($1, $2, $3, $4, 5, 'F-1')",
            )
            .bind(der)
            .bind(org)
            .bind(id)
            .bind(der_type)
            .execute(pool)
            .await
            .expect("der");
            sim_ders.push(SimDer {
                id: der,
                der_type: der_type.to_owned(),
                nameplate_kw: 5.0,
            });
        }
        GatewaySpec {
            id,
            secret,
            ders: sim_ders,
        }
    }

    /// A command for the DER's gateway, published the way the scheduler will:
    /// through the outbox (the relay's own outbox relay sends it).
    pub(crate) async fn command(
        &self,
        gateway: &GatewaySpec,
        der: Uuid,
        expires_in: chrono::Duration,
    ) -> Uuid {
        let now = chrono::Utc::now();
        let command_id = Uuid::now_v7();
        let command = DerCommand {
            command_id: command_id.to_string(),
            gateway_id: gateway.id.to_string(),
            der_id: der.to_string(),
            event_id: None,
            kind: "curtail_kw".to_owned(),
            value_kw: 1.5,
            start: now.timestamp_micros(),
            end: (now + chrono::Duration::minutes(30)).timestamp_micros(),
            expires_at: (now + expires_in).timestamp_micros(),
        };
        let mut conn = self.db.pool.acquire().await.expect("connection");
        outbox::enqueue(
            &mut conn,
            &command,
            &EventMeta {
                source: "test".to_owned(),
                ..Default::default()
            },
        )
        .await
        .expect("enqueued");
        command_id
    }

    pub(crate) async fn scalar_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, Option<i64>>(sql)
            .fetch_one(&self.db.pool)
            .await
            .expect(sql)
            .unwrap_or(0)
    }

    /// Whether the gateway's presence says online.
    pub(crate) async fn online(&self, gateway: Uuid) -> bool {
        sqlx::query_scalar("select online from pm.gateway where id = $1")
            .bind(gateway)
            .fetch_one(&self.db.pool)
            .await
            .expect("gateway")
    }

    pub(crate) async fn command_status(&self, id: Uuid) -> Option<String> {
        sqlx::query_scalar("select status from pm.der_command where id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await
            .expect("status")
    }
}

pub(crate) fn url(relay: &Running) -> String {
    ws_url(relay.addr)
}

pub(crate) fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/v1/gateway")
}

/// A simulated gateway streaming fast (10 readings per DER per second).
pub(crate) fn simulate(
    spec: GatewaySpec,
    url: String,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), SimError>> {
    let opts = Options {
        url,
        reading_every: Duration::from_millis(100),
        batch_every: Duration::from_millis(200),
        max_unacked: 64,
    };
    tokio::spawn(Gateway::new(spec, opts, stats).run(cancel))
}

/// A raw, authenticated session for tests that send what a good gateway would not.
pub(crate) async fn raw_session(url: &str, spec: &GatewaySpec) -> Socket {
    pmcore_seed::sim::connect(url, spec, "raw-test")
        .await
        .expect("welcomed")
}

pub(crate) async fn send_text(socket: &mut Socket, text: &str) {
    socket
        .send(Message::Text(text.to_owned().into()))
        .await
        .expect("sent");
}

pub(crate) async fn send(socket: &mut Socket, frame: &GatewayFrame) {
    send_text(socket, &serde_json::to_string(frame).expect("json")).await;
}

/// The next frame that is not a heartbeat or a command.
pub(crate) async fn next_reply(socket: &mut Socket) -> RelayFrame {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a reply in time")
            .expect("open")
            .expect("readable");
        if let Message::Text(text) = message {
            let frame: RelayFrame = serde_json::from_str(&text).expect("relay frame");
            if !matches!(frame, RelayFrame::Heartbeat | RelayFrame::Command(_)) {
                return frame;
            }
        }
    }
}

/// The close code the relay ends the session with.
pub(crate) async fn close_code(socket: &mut Socket) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

/// Reads frames until the command `id` arrives; fails after 20 s.
pub(crate) async fn command_arrives(socket: &mut Socket, id: Uuid) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message
                && let Ok(RelayFrame::Command(c)) = serde_json::from_str(&text)
                && c.command_id == id
            {
                return;
            }
        }
        panic!("the session ended before command {id}");
    })
    .await
    .expect("the command in time");
}
