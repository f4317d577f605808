//! Simulated gateways: each connects to the relay, streams its DERs' readings,
//! obeys commands and acknowledges them, reconnects with backoff and resends every
//! batch the relay has not acknowledged.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use pmcore_der_gateway_relay::protocol::{
    AckStatus, ErrorCode, GatewayFrame, RelayFrame, WireCommand, WireReading,
};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    fleet::{GatewaySpec, SimDer},
    profiles::{self, Kind},
};

/// Readings per frame, the relay's limit.
pub const MAX_READINGS: usize = 5000;

#[derive(Debug, Clone)]
pub struct Options {
    /// `ws://host:port/v1/gateway`.
    pub url: String,
    /// One reading per DER this often.
    pub reading_every: Duration,
    /// One telemetry frame per gateway this often.
    pub batch_every: Duration,
    /// Frames sent but not acknowledged before the gateway stops producing more.
    pub max_unacked: usize,
}

/// Counters over all simulated gateways.
#[derive(Debug, Default)]
pub struct Stats {
    pub generated: AtomicU64,
    pub acked: AtomicU64,
    pub refused: AtomicU64,
    pub resent: AtomicU64,
    pub commands: AtomicU64,
    pub command_acks: AtomicU64,
    pub connects: AtomicU64,
    pub connected: AtomicI64,
    /// Energy the simulated DERs shed under commands (kWh; the profile's power minus
    /// the power reported, summed over readings): what settlement should find.
    pub shed_kwh: std::sync::Mutex<f64>,
}

impl Stats {
    pub fn shed_kwh(&self) -> f64 {
        *self.shed_kwh.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the relay refused gateway {0}: {1}")]
    Refused(Uuid, String),
    #[error("{0:#}")]
    Connection(anyhow::Error),
}

/// Connects and says hello; returns the socket once welcomed.
pub async fn connect(url: &str, spec: &GatewaySpec, firmware: &str) -> Result<Socket, SimError> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| SimError::Connection(anyhow::anyhow!("connect {url}: {e}")))?;
    let hello = GatewayFrame::Hello {
        gateway_id: spec.id,
        secret: spec.secret.clone(),
        firmware: Some(firmware.to_owned()),
        ders: spec.ders.iter().map(|d| d.id).collect(),
    };
    send(&mut socket, &hello)
        .await
        .map_err(SimError::Connection)?;
    let first = tokio::time::timeout(Duration::from_secs(15), socket.next())
        .await
        .map_err(|_| SimError::Connection(anyhow::anyhow!("no welcome within 15 s")))?;
    match first {
        Some(Ok(Message::Text(text))) => match serde_json::from_str::<RelayFrame>(&text) {
            Ok(RelayFrame::Welcome { .. }) => Ok(socket),
            Ok(RelayFrame::Error {
                code: ErrorCode::NotAuthenticated,
                message,
                ..
            }) => Err(SimError::Refused(spec.id, message)),
            other => Err(SimError::Connection(anyhow::anyhow!(
                "expected welcome, got {other:?}"
            ))),
        },
        // "Going away" and "try again later" (the relay busy or unavailable) are
        // retried like a failed connection; any other close refuses this gateway.
        Some(Ok(Message::Close(Some(frame)))) if matches!(u16::from(frame.code), 1001 | 1013) => {
            Err(SimError::Connection(anyhow::anyhow!(
                "closed with {}: {}",
                u16::from(frame.code),
                frame.reason
            )))
        }
        Some(Ok(Message::Close(frame))) => {
            Err(SimError::Refused(spec.id, format!("closed: {frame:?}")))
        }
        other => Err(SimError::Connection(anyhow::anyhow!(
            "expected welcome, got {other:?}"
        ))),
    }
}

pub async fn send(socket: &mut Socket, frame: &GatewayFrame) -> anyhow::Result<()> {
    let text = serde_json::to_string(frame)?;
    socket.send(Message::Text(text.into())).await?;
    Ok(())
}

#[derive(Debug)]
struct Pending {
    text: String,
    readings: u64,
    /// Set when the relay asked for a resend later.
    retry_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Known {
    command: WireCommand,
    applied_sent: bool,
}

/// One simulated gateway.
#[derive(Debug)]
pub struct Gateway {
    spec: GatewaySpec,
    kinds: Vec<Kind>,
    opts: Options,
    stats: Arc<Stats>,
    next_ts: DateTime<Utc>,
    seq: u64,
    unacked: BTreeMap<u64, Pending>,
    commands: HashMap<Uuid, Known>,
}

impl Gateway {
    pub fn new(spec: GatewaySpec, opts: Options, stats: Arc<Stats>) -> Self {
        let kinds = spec.ders.iter().map(|d| Kind::parse(&d.der_type)).collect();
        Self {
            spec,
            kinds,
            opts,
            stats,
            next_ts: Utc::now(),
            seq: 0,
            unacked: BTreeMap::new(),
            commands: HashMap::new(),
        }
    }

    /// Runs until cancelled, then waits (a little) for outstanding acks so that what
    /// was generated is what was acknowledged. Fails only if the relay refuses the
    /// gateway's credentials.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), SimError> {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build();
        while !cancel.is_cancelled() {
            let socket = tokio::select! {
                () = cancel.cancelled() => break,
                s = connect(&self.opts.url, &self.spec, "sim-1.0") => s,
            };
            let mut socket = match socket {
                Ok(s) => s,
                Err(e @ SimError::Refused(..)) => return Err(e),
                Err(SimError::Connection(error)) => {
                    tracing::debug!(gateway = %self.spec.id, %error, "connect failed");
                    let wait = backoff.next().unwrap_or(Duration::from_secs(10));
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            self.stats.connects.fetch_add(1, Relaxed);
            self.stats.connected.fetch_add(1, Relaxed);
            let outcome = self.session(&mut socket, &cancel).await;
            self.stats.connected.fetch_sub(1, Relaxed);
            match outcome {
                Ok(()) => {
                    let _ = socket.close(None).await;
                    return Ok(());
                }
                Err(error) => {
                    tracing::debug!(gateway = %self.spec.id, error = %format!("{error:#}"), "session ended; reconnecting");
                    backoff = ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(200))
                        .with_max_delay(Duration::from_secs(10))
                        .with_jitter()
                        .without_max_times()
                        .build();
                    let wait = backoff.next().unwrap_or(Duration::from_secs(1));
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// One connection: resend what is unacknowledged, then stream. `Ok` on a
    /// clean stop, `Err` when the connection broke.
    async fn session(
        &mut self,
        socket: &mut Socket,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        for pending in self.unacked.values_mut() {
            pending.retry_at = None;
            socket
                .send(Message::Text(pending.text.clone().into()))
                .await?;
            self.stats.resent.fetch_add(1, Relaxed);
        }
        let mut batch_tick = tokio::time::interval(self.opts.batch_every);
        let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
        let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                () = cancel.cancelled() => return self.drain(socket).await,
                _ = batch_tick.tick() => self.stream(socket).await?,
                _ = heartbeat.tick() => send(socket, &GatewayFrame::Heartbeat).await?,
                _ = housekeeping.tick() => self.housekeeping(socket).await?,
                message = socket.next() => match message {
                    Some(Ok(Message::Text(text))) => self.on_frame(socket, &text).await?,
                    Some(Ok(Message::Close(frame))) => anyhow::bail!("relay closed: {frame:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("connection closed"),
                },
            }
        }
    }

    /// Sends the readings due since the last frame, unless too much is unacknowledged.
    async fn stream(&mut self, socket: &mut Socket) -> anyhow::Result<()> {
        let now = Utc::now();
        // A gateway buffers an hour at most while it cannot send.
        let oldest = now - chrono::Duration::hours(1);
        if self.next_ts < oldest {
            self.next_ts = oldest;
        }
        let step = chrono::Duration::from_std(self.opts.reading_every)?;
        let step_hours = self.opts.reading_every.as_secs_f64() / 3600.0;
        let mut readings = Vec::new();
        let mut shed_kwh = 0.0;
        while self.next_ts <= now && self.unacked.len() < self.opts.max_unacked {
            let ts = self.next_ts;
            for (der, kind) in self.spec.ders.iter().zip(&self.kinds) {
                let (base, power_kw) = self.power(der, *kind, ts);
                shed_kwh += (base - power_kw) * step_hours;
                readings.push(WireReading {
                    der_id: der.id,
                    ts,
                    power_kw,
                    soc_pct: profiles::soc_pct(*kind, ts),
                });
            }
            self.next_ts = ts + step;
            if readings.len() >= MAX_READINGS {
                self.send_batch(socket, std::mem::take(&mut readings))
                    .await?;
            }
        }
        if !readings.is_empty() {
            self.send_batch(socket, readings).await?;
        }
        *self
            .stats
            .shed_kwh
            .lock()
            .unwrap_or_else(|p| p.into_inner()) += shed_kwh;
        Ok(())
    }

    async fn send_batch(
        &mut self,
        socket: &mut Socket,
        readings: Vec<WireReading>,
    ) -> anyhow::Result<()> {
        for chunk in readings.chunks(MAX_READINGS) {
            self.seq += 1;
            let frame = GatewayFrame::Telemetry {
                batch_id: format!("{}-{}", self.spec.id.simple(), self.seq),
                readings: chunk.to_vec(),
            };
            let text = serde_json::to_string(&frame)?;
            let count = chunk.len() as u64;
            self.stats.generated.fetch_add(count, Relaxed);
            self.unacked.insert(
                self.seq,
                Pending {
                    text: text.clone(),
                    readings: count,
                    retry_at: None,
                },
            );
            socket.send(Message::Text(text.into())).await?;
        }
        Ok(())
    }

    /// The profile's power and the power after any command in force.
    fn power(&self, der: &SimDer, kind: Kind, ts: DateTime<Utc>) -> (f64, f64) {
        let base = profiles::power_kw(kind, der.id, der.nameplate_kw, ts);
        let active = self
            .commands
            .values()
            .map(|k| &k.command)
            .filter(|c| c.der_id == der.id && c.kind != "release" && c.start <= ts && ts < c.end)
            .max_by_key(|c| c.start);
        match active {
            Some(c) => (
                base,
                respond(kind, der.nameplate_kw, base, &c.kind, c.value_kw),
            ),
            None => (base, base),
        }
    }

    fn seq_of(&self, batch_id: &str) -> Option<u64> {
        batch_id.rsplit('-').next()?.parse().ok()
    }

    async fn on_frame(&mut self, socket: &mut Socket, text: &str) -> anyhow::Result<()> {
        let frame: RelayFrame = serde_json::from_str(text).context("relay frame")?;
        match frame {
            RelayFrame::TelemetryAck { batch_id } => {
                if let Some(p) = self.seq_of(&batch_id).and_then(|s| self.unacked.remove(&s)) {
                    self.stats.acked.fetch_add(p.readings, Relaxed);
                }
            }
            RelayFrame::Error {
                code,
                message,
                batch_id: Some(batch_id),
                ..
            } => {
                let Some(seq) = self.seq_of(&batch_id) else {
                    return Ok(());
                };
                match code {
                    // Not stored, through no fault of the batch: send it again soon.
                    ErrorCode::Unavailable | ErrorCode::RateLimited => {
                        if let Some(p) = self.unacked.get_mut(&seq) {
                            p.retry_at = Some(Instant::now() + Duration::from_secs(1));
                        }
                    }
                    _ => {
                        tracing::warn!(gateway = %self.spec.id, code = code.as_str(), %message, "batch refused");
                        if let Some(p) = self.unacked.remove(&seq) {
                            self.stats.refused.fetch_add(p.readings, Relaxed);
                        }
                    }
                }
            }
            RelayFrame::Error { code, message, .. } => {
                tracing::warn!(gateway = %self.spec.id, code = code.as_str(), %message, "relay error");
            }
            RelayFrame::Command(command) => self.on_command(socket, command).await?,
            RelayFrame::Welcome { .. } | RelayFrame::Heartbeat => {}
        }
        Ok(())
    }

    async fn on_command(
        &mut self,
        socket: &mut Socket,
        command: WireCommand,
    ) -> anyhow::Result<()> {
        let id = command.command_id;
        if let Some(known) = self.commands.get(&id) {
            // Delivered again (a reconnect, another relay): answer as before.
            let status = if known.applied_sent {
                AckStatus::Applied
            } else {
                AckStatus::Received
            };
            return self.ack(socket, id, status, None).await;
        }
        self.stats.commands.fetch_add(1, Relaxed);
        if command.expires_at <= Utc::now() {
            return self
                .ack(socket, id, AckStatus::Rejected, Some("expired on arrival"))
                .await;
        }
        let der = self.spec.ders.iter().find(|d| d.id == command.der_id);
        if der.is_none() {
            return self
                .ack(
                    socket,
                    id,
                    AckStatus::Rejected,
                    Some("not a DER of this gateway"),
                )
                .await;
        }
        if command.kind == "release" {
            let der_id = command.der_id;
            self.commands.retain(|_, k| k.command.der_id != der_id);
        }
        self.commands.insert(
            id,
            Known {
                command,
                applied_sent: false,
            },
        );
        self.ack(socket, id, AckStatus::Received, None).await?;
        self.housekeeping(socket).await
    }

    /// Applied acks for commands whose start has come; resends asked for; old commands forgotten.
    async fn housekeeping(&mut self, socket: &mut Socket) -> anyhow::Result<()> {
        let now = Utc::now();
        let due: Vec<Uuid> = self
            .commands
            .iter()
            .filter(|(_, k)| !k.applied_sent && k.command.start <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(k) = self.commands.get_mut(&id) {
                k.applied_sent = true;
            }
            self.ack(socket, id, AckStatus::Applied, None).await?;
        }
        self.commands
            .retain(|_, k| k.command.end + chrono::Duration::hours(1) > now || !k.applied_sent);
        let instant = Instant::now();
        let mut resend = Vec::new();
        for p in self.unacked.values_mut() {
            if p.retry_at.is_some_and(|at| at <= instant) {
                p.retry_at = None;
                resend.push(p.text.clone());
            }
        }
        for text in resend {
            self.stats.resent.fetch_add(1, Relaxed);
            socket.send(Message::Text(text.into())).await?;
        }
        Ok(())
    }

    async fn ack(
        &mut self,
        socket: &mut Socket,
        command_id: Uuid,
        status: AckStatus,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        self.stats.command_acks.fetch_add(1, Relaxed);
        send(
            socket,
            &GatewayFrame::CommandAck {
                command_id,
                status,
                reason: reason.map(str::to_owned),
            },
        )
        .await
    }

    /// Waits up to 10 s for the acks of what was sent.
    async fn drain(&mut self, socket: &mut Socket) -> anyhow::Result<()> {
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
        while !self.unacked.is_empty() {
            tokio::select! {
                () = &mut deadline => break,
                _ = housekeeping.tick() => self.housekeeping(socket).await?,
                message = socket.next() => match message {
                    Some(Ok(Message::Text(text))) => self.on_frame(socket, &text).await?,
                    Some(Ok(_)) => {}
                    _ => anyhow::bail!("connection closed while draining"),
                },
            }
        }
        Ok(())
    }
}

/// A DER's net power under a command: a load sheds up to `value_kw` (not below
/// zero), a battery discharges `value_kw` more (down to its nameplate), a setpoint
/// is held within the nameplate, and solar cannot shed load.
pub fn respond(kind: Kind, nameplate_kw: f64, base_kw: f64, command: &str, value_kw: f64) -> f64 {
    match (command, kind) {
        ("setpoint_kw", _) => value_kw.clamp(-nameplate_kw, nameplate_kw),
        ("curtail_kw", Kind::Battery) => (base_kw - value_kw).max(-nameplate_kw),
        ("curtail_kw", Kind::SolarPv) => base_kw,
        ("curtail_kw", _) if base_kw > 0.0 => (base_kw - value_kw).max(0.0),
        _ => base_kw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ders_answer_commands_the_way_their_kind_can() {
        // A 5 kW load at 3.5 kW told to curtail 2: 1.5; told to curtail 5: off.
        assert_eq!(respond(Kind::CiLoad, 5.0, 3.5, "curtail_kw", 2.0), 1.5);
        assert_eq!(respond(Kind::CiLoad, 5.0, 3.5, "curtail_kw", 5.0), 0.0);
        // An idle 5 kW battery curtailing 2 discharges 2; one discharging 4 stops at -5.
        assert_eq!(respond(Kind::Battery, 5.0, 0.0, "curtail_kw", 2.0), -2.0);
        assert_eq!(respond(Kind::Battery, 5.0, -4.0, "curtail_kw", 2.0), -5.0);
        // Solar cannot shed load; a setpoint is held within the nameplate.
        assert_eq!(respond(Kind::SolarPv, 5.0, -3.0, "curtail_kw", 2.0), -3.0);
        assert_eq!(respond(Kind::Battery, 5.0, 1.0, "setpoint_kw", -9.0), -5.0);
    }
}
