//! One gateway's WebSocket session, from `hello` to close.

use std::{
    collections::HashSet,
    num::NonZeroU32,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use chrono::Utc;
use futures::{
    SinkExt, StreamExt,
    stream::{FuturesOrdered, SplitSink, SplitStream},
};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use pmcore_events::domain::DerCommandAck;
use uuid::Uuid;

use crate::{
    auth::{self, AuthError, Gateway},
    commands,
    hub::{Control, Hub, Signals},
    presence,
    protocol::{self, AckStatus, ErrorCode, GatewayFrame, RelayFrame, WireReading, close},
    telemetry,
};

/// Batches produced but not yet acknowledged by the broker, per session. Beyond
/// this the session stops reading, which pushes back on the gateway.
const MAX_IN_FLIGHT: usize = 64;
/// How often a live session records `last_seen_at`.
const SEEN_EVERY: Duration = Duration::from_secs(10);

type Sink = SplitSink<WebSocket, Message>;
type Delivery = Pin<Box<dyn Future<Output = (String, usize, Result<(), String>)> + Send>>;

/// How a session ended: the close code sent (if any) and the presence reason.
struct Ending {
    code: Option<u16>,
    reason: &'static str,
}

const SECRET_ROTATED: Ending = Ending {
    code: Some(close::POLICY),
    reason: "secret_rotated",
};

pub async fn run(hub: Arc<Hub>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let hello = tokio::time::timeout(hub.limits.hello_timeout, stream.next()).await;
    let (gateway_id, secret, firmware, claimed) = match hello {
        Ok(Some(Ok(Message::Text(text)))) => match protocol::parse(&text) {
            Ok(GatewayFrame::Hello {
                gateway_id,
                secret,
                firmware,
                ders,
            }) => (gateway_id, secret, firmware, ders),
            _ => {
                refuse(
                    &mut sink,
                    ErrorCode::NotAuthenticated,
                    "the first frame must be hello",
                )
                .await;
                return;
            }
        },
        Ok(Some(Ok(_))) => {
            refuse(
                &mut sink,
                ErrorCode::NotAuthenticated,
                "the first frame must be a hello text frame",
            )
            .await;
            return;
        }
        _ => {
            metrics::counter!("pmcore_relay_rejected_total", "code" => "hello_timeout")
                .increment(1);
            return;
        }
    };
    let gateway = match auth::authenticate(&hub.pool, &hub.verifier, gateway_id, secret).await {
        Ok(g) => g,
        Err(AuthError::Refused) => {
            tracing::warn!(%gateway_id, "gateway refused: unknown id or wrong secret");
            metrics::counter!("pmcore_relay_auth_failures_total").increment(1);
            refuse(
                &mut sink,
                ErrorCode::NotAuthenticated,
                "unknown gateway or wrong secret",
            )
            .await;
            return;
        }
        Err(AuthError::Busy) => {
            metrics::counter!("pmcore_relay_rejected_total", "code" => "busy").increment(1);
            let _ = send_close(&mut sink, close::TRY_AGAIN_LATER, "relay busy, retry later").await;
            return;
        }
        Err(error @ AuthError::Unavailable(_)) => {
            tracing::error!(%gateway_id, %error, "cannot authenticate gateway");
            let _ = send_close(
                &mut sink,
                close::GOING_AWAY,
                "relay unavailable, retry later",
            )
            .await;
            return;
        }
    };
    let firmware = firmware.map(|f| protocol::clean_text(&f, 100));
    let session_id = Uuid::now_v7();
    if let Err(error) = presence::connected(
        &hub.pool,
        &gateway,
        session_id,
        &hub.instance,
        firmware.as_deref(),
    )
    .await
    {
        tracing::error!(%gateway_id, error = %format!("{error:#}"), "cannot record presence");
        let _ = send_close(
            &mut sink,
            close::GOING_AWAY,
            "relay unavailable, retry later",
        )
        .await;
        return;
    }
    let signals = hub.register(gateway.id, session_id, gateway.secret_rotated_at);
    tracing::info!(%gateway_id, %session_id, ders = gateway.ders.len(), "gateway connected");
    let mut session = Session {
        hub: hub.clone(),
        gateway,
        session_id,
        sink,
        sent_commands: HashSet::new(),
        errors: 0,
        limiter: RateLimiter::direct(quota(hub.limits.frames_per_second)),
        last_frame: Instant::now(),
        last_seen_recorded: Instant::now(),
        in_flight: FuturesOrdered::new(),
    };
    let ending = session.serve(&mut stream, signals, &claimed).await;
    if let Some(code) = ending.code {
        let _ = tokio::time::timeout(
            hub.limits.send_timeout,
            send_close(&mut session.sink, code, ending.reason),
        )
        .await;
    }
    hub.unregister(session.gateway.id, session_id);
    if let Err(error) =
        presence::disconnected(&hub.pool, &session.gateway, session_id, ending.reason).await
    {
        tracing::warn!(%gateway_id, error = %format!("{error:#}"), "cannot record disconnect");
    }
    tracing::info!(%gateway_id, %session_id, reason = ending.reason, "gateway disconnected");
}

fn quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(per_second.max(1).saturating_mul(2)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

struct Session {
    hub: Arc<Hub>,
    gateway: Gateway,
    session_id: Uuid,
    sink: Sink,
    /// Commands sent in this session; a reconnect sends unacknowledged ones again.
    sent_commands: HashSet<Uuid>,
    errors: u32,
    limiter: DefaultDirectRateLimiter,
    last_frame: Instant,
    last_seen_recorded: Instant,
    in_flight: FuturesOrdered<Delivery>,
}

impl Session {
    async fn serve(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        mut signals: Signals,
        claimed: &[Uuid],
    ) -> Ending {
        let timeout = self.hub.limits.heartbeat_timeout;
        let welcome = RelayFrame::Welcome {
            session_id: self.session_id,
            server_time: Utc::now(),
            heartbeat_interval_s: (timeout / 3).as_secs().max(1),
            // DERs the gateway says it controls that the platform does not
            // attribute to it: their readings will be refused.
            unknown_ders: claimed
                .iter()
                .filter(|d| !self.gateway.ders.contains(d))
                .take(1000)
                .copied()
                .collect(),
        };
        if self.send(&welcome).await.is_err() {
            return Ending {
                code: None,
                reason: "connection_lost",
            };
        }
        match self.deliver_commands().await {
            Ok(None) => {}
            Ok(Some(ending)) => return ending,
            Err(()) => {
                return Ending {
                    code: None,
                    reason: "connection_lost",
                };
            }
        }
        let mut tick = tokio::time::interval((timeout / 3).max(Duration::from_millis(100)));
        tick.reset();
        loop {
            let reading = self.in_flight.len() < MAX_IN_FLIGHT;
            tokio::select! {
                () = self.hub.cancel.cancelled() => {
                    self.drain().await;
                    return Ending { code: Some(close::GOING_AWAY), reason: "relay_shutdown" };
                }
                Some(()) = signals.commands.recv() => match self.deliver_commands().await {
                    Ok(None) => {}
                    Ok(Some(ending)) => return ending,
                    Err(()) => return Ending { code: None, reason: "connection_lost" },
                },
                Ok(()) = signals.control.changed() => {
                    let control = *signals.control.borrow_and_update();
                    match control {
                        Control::None => {}
                        Control::CheckSecret => match self.secret_current().await {
                            Ok(true) | Err(()) => {}
                            Ok(false) => return SECRET_ROTATED,
                        },
                        Control::SecretRotated => {
                            self.drain().await;
                            return SECRET_ROTATED;
                        }
                        Control::Replaced => {
                            self.drain().await;
                            return Ending { code: Some(close::POLICY), reason: "replaced_by_new_session" };
                        }
                    }
                }
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    if self.acknowledge(done).await.is_err() {
                        return Ending { code: None, reason: "connection_lost" };
                    }
                }
                _ = tick.tick() => {
                    if self.last_frame.elapsed() > timeout {
                        metrics::counter!("pmcore_relay_rejected_total", "code" => "heartbeat_timeout").increment(1);
                        return Ending { code: Some(close::HEARTBEAT_TIMEOUT), reason: "heartbeat_timeout" };
                    }
                    if self.send(&RelayFrame::Heartbeat).await.is_err() {
                        return Ending { code: None, reason: "connection_lost" };
                    }
                }
                message = stream.next(), if reading => {
                    match message {
                        None => { self.drain().await; return Ending { code: None, reason: "closed" } }
                        Some(Err(error)) => {
                            if is_too_big(&error) {
                                metrics::counter!("pmcore_relay_rejected_total", "code" => "too_big").increment(1);
                                tracing::warn!(gateway_id = %self.gateway.id, %error, "frame over the size limit");
                                return Ending { code: Some(close::TOO_BIG), reason: "frame_too_big" };
                            }
                            return Ending { code: None, reason: "connection_lost" };
                        }
                        Some(Ok(message)) => {
                            self.last_frame = Instant::now();
                            match self.on_message(message).await {
                                Ok(None) => {}
                                Ok(Some(ending)) => return ending,
                                Err(()) => return Ending { code: None, reason: "connection_lost" },
                            }
                        }
                    }
                }
            }
        }
    }

    /// Handles one frame; `Ok(Some)` ends the session, `Err` means the socket broke.
    async fn on_message(&mut self, message: Message) -> Result<Option<Ending>, ()> {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => {
                self.drain().await;
                return Ok(Some(Ending {
                    code: None,
                    reason: "closed",
                }));
            }
            Message::Ping(_) | Message::Pong(_) => return Ok(None),
            Message::Binary(_) => {
                return self
                    .reject(
                        ErrorCode::Malformed,
                        "frames are JSON text".into(),
                        None,
                        None,
                    )
                    .await;
            }
        };
        if self.limiter.check().is_err() {
            return self
                .reject(
                    ErrorCode::RateLimited,
                    "too many frames; slow down and resend".into(),
                    None,
                    None,
                )
                .await;
        }
        if self.last_seen_recorded.elapsed() >= SEEN_EVERY {
            self.last_seen_recorded = Instant::now();
            if let Err(error) =
                presence::seen(&self.hub.pool, self.gateway.id, self.session_id).await
            {
                tracing::warn!(%error, "cannot record last_seen_at");
            }
        }
        let frame = match protocol::parse(&text) {
            Ok(frame) => frame,
            Err((code, message)) => return self.reject(code, message, None, None).await,
        };
        metrics::counter!("pmcore_relay_frames_total", "type" => frame_type(&frame)).increment(1);
        match frame {
            GatewayFrame::Heartbeat => Ok(None),
            GatewayFrame::Hello { .. } => {
                self.reject(
                    ErrorCode::Invalid,
                    "already authenticated".into(),
                    None,
                    None,
                )
                .await
            }
            GatewayFrame::Telemetry { batch_id, readings } => {
                self.on_telemetry(batch_id, readings).await
            }
            GatewayFrame::CommandAck {
                command_id,
                status,
                reason,
            } => self.on_command_ack(command_id, status, reason).await,
        }
    }

    async fn on_telemetry(
        &mut self,
        batch_id: String,
        readings: Vec<WireReading>,
    ) -> Result<Option<Ending>, ()> {
        if telemetry::has_foreign(&self.gateway, &readings)
            && let Err(error) = self.gateway.refresh_ders(&self.hub.pool).await
        {
            tracing::warn!(%error, "cannot refresh the gateway's DERs");
        }
        if let Err((code, message)) =
            telemetry::check(&self.gateway, &batch_id, &readings, Utc::now())
        {
            return self.reject(code, message, Some(batch_id), None).await;
        }
        let count = readings.len();
        match telemetry::produce(&self.hub, &self.gateway, batch_id.clone(), readings) {
            Ok(delivery) => {
                self.in_flight.push_back(Box::pin(async move {
                    let result = delivery.await.map(|_| ()).map_err(|e| e.to_string());
                    (batch_id, count, result)
                }));
                Ok(None)
            }
            Err((code, message)) => self.reject(code, message, Some(batch_id), None).await,
        }
    }

    async fn acknowledge(
        &mut self,
        (batch_id, count, result): (String, usize, Result<(), String>),
    ) -> Result<(), ()> {
        match result {
            Ok(()) => {
                metrics::counter!("pmcore_relay_readings_total").increment(count as u64);
                self.send(&RelayFrame::TelemetryAck { batch_id }).await
            }
            Err(error) => {
                // Not the gateway's fault: no error count, it resends later.
                tracing::warn!(gateway_id = %self.gateway.id, %batch_id, %error, "broker did not take a batch");
                self.send(&RelayFrame::Error {
                    code: ErrorCode::Unavailable,
                    message: "the batch was not stored; resend it".into(),
                    batch_id: Some(batch_id),
                    command_id: None,
                })
                .await
            }
        }
    }

    /// Waits for the batches already handed to the broker, so their acks reach
    /// the gateway before the session ends.
    async fn drain(&mut self) {
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        while !self.in_flight.is_empty() {
            tokio::select! {
                () = &mut deadline => return,
                Some(done) = self.in_flight.next() => {
                    if self.acknowledge(done).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn on_command_ack(
        &mut self,
        command_id: Uuid,
        status: AckStatus,
        reason: Option<String>,
    ) -> Result<Option<Ending>, ()> {
        let lookup = commands::der_of(
            &self.hub.pool,
            self.gateway.id,
            command_id,
            self.gateway.secret_rotated_at,
        )
        .await;
        let der_id = match lookup {
            Ok(Some((der, true))) => der,
            // A session opened with a secret rotated since acknowledges nothing,
            // whether or not this instance heard of the rotation.
            Ok(Some((_, false))) => return Ok(Some(SECRET_ROTATED)),
            Ok(None) => {
                return self
                    .reject(
                        ErrorCode::Invalid,
                        "no such command for this gateway".into(),
                        None,
                        Some(command_id),
                    )
                    .await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot look up a command");
                return self.unavailable(command_id).await;
            }
        };
        let ack = DerCommandAck {
            command_id: command_id.to_string(),
            gateway_id: self.gateway.id.to_string(),
            der_id: Some(der_id.to_string()),
            status: status.as_str().to_owned(),
            reason: reason.map(|r| protocol::clean_text(&r, 500)),
            acked_at: Utc::now().timestamp_micros(),
        };
        if let Err(error) = commands::publish(&self.hub, &ack, self.gateway.id).await {
            tracing::warn!(error = %format!("{error:#}"), "cannot publish a command ack");
            return self.unavailable(command_id).await;
        }
        Ok(None)
    }

    async fn unavailable(&mut self, command_id: Uuid) -> Result<Option<Ending>, ()> {
        self.send(&RelayFrame::Error {
            code: ErrorCode::Unavailable,
            message: "the acknowledgement was not recorded; send it again".into(),
            batch_id: None,
            command_id: Some(command_id),
        })
        .await
        .map(|()| None)
    }

    /// Whether the secret this session was opened with is still the gateway's.
    /// `Err` when Postgres cannot say.
    /// (Owns what it needs, so no borrow of the session, which is not `Sync`, is
    /// held across the query.)
    fn secret_current(&self) -> impl Future<Output = Result<bool, ()>> + Send + 'static {
        let (pool, id, set_at) = (
            self.hub.pool.clone(),
            self.gateway.id,
            self.gateway.secret_rotated_at,
        );
        async move {
            commands::secret_current(&pool, id, set_at)
                .await
                .map_err(|error| tracing::warn!(%error, "cannot check the gateway's secret"))
        }
    }

    /// Sends the gateway's pending commands; `Ok(Some)` ends the session.
    async fn deliver_commands(&mut self) -> Result<Option<Ending>, ()> {
        // Checked before each delivery rather than trusted to the rotation notice,
        // which another instance's session may not have received yet.
        match self.secret_current().await {
            Ok(true) => {}
            Ok(false) => return Ok(Some(SECRET_ROTATED)),
            // The periodic sweep tries again.
            Err(()) => return Ok(None),
        }
        let pending = match commands::pending(&self.hub, self.gateway.id).await {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot load pending commands");
                return Ok(None);
            }
        };
        let mut delivered = Vec::new();
        for command in pending {
            if self.sent_commands.contains(&command.command_id) {
                continue;
            }
            let id = command.command_id;
            self.send(&RelayFrame::Command(command)).await?;
            self.sent_commands.insert(id);
            delivered.push(id);
        }
        if !delivered.is_empty() {
            metrics::counter!("pmcore_relay_commands_delivered_total")
                .increment(delivered.len() as u64);
            if let Err(error) = commands::mark_delivered(&self.hub.pool, &delivered).await {
                tracing::warn!(%error, "cannot record command delivery");
            }
        }
        Ok(None)
    }

    /// Answers a bad frame with an error; too many of them end the session.
    async fn reject(
        &mut self,
        code: ErrorCode,
        message: String,
        batch_id: Option<String>,
        command_id: Option<Uuid>,
    ) -> Result<Option<Ending>, ()> {
        self.errors += 1;
        metrics::counter!("pmcore_relay_rejected_total", "code" => code.as_str()).increment(1);
        tracing::info!(gateway_id = %self.gateway.id, code = code.as_str(), %message, "frame refused");
        self.send(&RelayFrame::Error {
            code,
            message,
            batch_id,
            command_id,
        })
        .await?;
        if self.errors >= self.hub.limits.max_errors {
            return Ok(Some(Ending {
                code: Some(close::POLICY),
                reason: "protocol_errors",
            }));
        }
        Ok(None)
    }

    /// Sends a frame, giving up (and so ending the session) when the gateway does not
    /// take it in time: a gateway that stops reading must not hold its session, and
    /// the commands waiting for it, forever.
    async fn send(&mut self, frame: &RelayFrame) -> Result<(), ()> {
        match tokio::time::timeout(
            self.hub.limits.send_timeout,
            send_frame(&mut self.sink, frame),
        )
        .await
        {
            Ok(sent) => sent,
            Err(_) => {
                metrics::counter!("pmcore_relay_rejected_total", "code" => "send_timeout")
                    .increment(1);
                tracing::warn!(gateway_id = %self.gateway.id, "the gateway stopped reading; ending its session");
                Err(())
            }
        }
    }
}

fn frame_type(frame: &GatewayFrame) -> &'static str {
    match frame {
        GatewayFrame::Hello { .. } => "hello",
        GatewayFrame::Telemetry { .. } => "telemetry",
        GatewayFrame::CommandAck { .. } => "command_ack",
        GatewayFrame::Heartbeat => "heartbeat",
    }
}

async fn send_frame(sink: &mut Sink, frame: &RelayFrame) -> Result<(), ()> {
    let text = serde_json::to_string(frame).map_err(|_| ())?;
    sink.send(Message::Text(text.into())).await.map_err(|_| ())
}

async fn refuse(sink: &mut Sink, code: ErrorCode, message: &str) {
    let frame = RelayFrame::Error {
        code,
        message: message.to_owned(),
        batch_id: None,
        command_id: None,
    };
    // Bounded: a client that sent a bad hello and stopped reading gets no more time.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = send_frame(sink, &frame).await;
        let _ = send_close(sink, close::POLICY, message).await;
    })
    .await;
}

async fn send_close(sink: &mut Sink, code: u16, reason: &str) -> Result<(), axum::Error> {
    sink.send(Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    })))
    .await
}

fn is_too_big(error: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) =
            e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            return true;
        }
        source = e.source();
    }
    false
}
