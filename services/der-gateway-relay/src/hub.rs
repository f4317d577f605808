//! What the sessions of one relay instance share: the producer, the registry of
//! connected gateways (to wake a session when a command arrives) and the limits.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use pmcore_kafka::KafkaConfig;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Per-session limits; see the `gatewaySession` channel in the AsyncAPI document.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub frames_per_second: u32,
    pub heartbeat_timeout: Duration,
    /// Protocol errors a session may cause before it is closed.
    pub max_errors: u32,
    pub hello_timeout: Duration,
    /// Argon2id verifications at once (hellos beyond wait, then are told to retry).
    pub max_verifications: usize,
    /// Hellos per second from one source address, in bursts of ten times that.
    pub hellos_per_second_per_address: u32,
    /// How long a frame may take to reach the gateway's socket.
    pub send_timeout: Duration,
}

/// What a session is told from outside its socket, apart from "commands may be
/// waiting" (a coalescing wake-up). Kept in a `watch` of its own, so a queue full of
/// command wake-ups can never drop it, and only ever raised: a later, weaker signal
/// does not hide a stronger one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Control {
    #[default]
    None,
    /// Rotation notices may have been missed: check the secret against Postgres.
    CheckSecret,
    /// The gateway's secret was rotated: the session was opened with the old one.
    SecretRotated,
    /// The same gateway opened a newer session on this instance.
    Replaced,
}

/// What a registered session listens to.
#[derive(Debug)]
pub struct Signals {
    /// Commands may be waiting in Postgres.
    pub commands: mpsc::Receiver<()>,
    pub control: watch::Receiver<Control>,
}

#[derive(Debug)]
struct Entry {
    session_id: Uuid,
    /// When the secret the session was opened with was set.
    secret_rotated_at: DateTime<Utc>,
    commands: mpsc::Sender<()>,
    control: watch::Sender<Control>,
}

impl Entry {
    fn raise(&self, to: Control) {
        self.control.send_if_modified(|now| {
            let raised = to > *now;
            if raised {
                *now = to;
            }
            raised
        });
    }
}

pub struct Hub {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    pub producer: pmcore_kafka::Producer,
    pub limits: Limits,
    /// Bounds the argon2id runs of hellos.
    pub verifier: crate::auth::Verifier,
    /// Hellos (WebSocket upgrades) per source address.
    pub hellos: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Names this process in presence events.
    pub instance: String,
    pub cancel: CancellationToken,
    /// Every upgraded session, so shutdown can wait for their goodbyes (close frame,
    /// presence event) before the process exits.
    pub tasks: tokio_util::task::TaskTracker,
    sessions: Mutex<HashMap<Uuid, Entry>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("instance", &self.instance)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(
        pool: PgPool,
        kafka: KafkaConfig,
        producer: pmcore_kafka::Producer,
        limits: Limits,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "relay".to_owned());
        let rate = std::num::NonZeroU32::new(limits.hellos_per_second_per_address.max(1))
            .unwrap_or(std::num::NonZeroU32::MIN);
        let burst = rate.saturating_mul(std::num::NonZeroU32::new(10).unwrap_or(rate));
        Arc::new(Self {
            pool,
            kafka,
            producer,
            verifier: crate::auth::Verifier::new(limits.max_verifications, limits.hello_timeout),
            hellos: governor::RateLimiter::keyed(
                governor::Quota::per_second(rate).allow_burst(burst),
            ),
            limits,
            instance: format!("{host}-{}", Uuid::now_v7().simple()),
            cancel,
            tasks: tokio_util::task::TaskTracker::new(),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Registers a session opened with the secret set at `secret_rotated_at`,
    /// telling an older one of the same gateway to close.
    pub fn register(
        &self,
        gateway_id: Uuid,
        session_id: Uuid,
        secret_rotated_at: DateTime<Utc>,
    ) -> Signals {
        // One pending wake-up says all there is to say: commands are re-read whole.
        let (commands, commands_rx) = mpsc::channel(1);
        let (control, control_rx) = watch::channel(Control::None);
        let old = self.lock().insert(
            gateway_id,
            Entry {
                session_id,
                secret_rotated_at,
                commands,
                control,
            },
        );
        if let Some(old) = old {
            old.raise(Control::Replaced);
        }
        metrics::gauge!("pmcore_relay_sessions").set(self.lock().len() as f64);
        Signals {
            commands: commands_rx,
            control: control_rx,
        }
    }

    pub fn unregister(&self, gateway_id: Uuid, session_id: Uuid) {
        let mut sessions = self.lock();
        if sessions
            .get(&gateway_id)
            .is_some_and(|e| e.session_id == session_id)
        {
            sessions.remove(&gateway_id);
        }
        metrics::gauge!("pmcore_relay_sessions").set(sessions.len() as f64);
    }

    /// Tells the gateway's session, if it is connected here, that commands may be
    /// waiting. A full queue already holds a wake-up, which is as good as another.
    pub fn wake(&self, gateway_id: Uuid) {
        if let Some(entry) = self.lock().get(&gateway_id) {
            let _ = entry.commands.try_send(());
        }
    }

    pub fn wake_all(&self) {
        for entry in self.lock().values() {
            let _ = entry.commands.try_send(());
        }
    }

    /// Raises the gateway's session's control signal, if it is connected here.
    pub fn control(&self, gateway_id: Uuid, to: Control) {
        if let Some(entry) = self.lock().get(&gateway_id) {
            entry.raise(to);
        }
    }

    /// A rotation notice: ends the gateway's session here if it was opened with a
    /// secret older than the one set at `rotated_at`. A gateway that reconnected with
    /// the new secret before the notice arrived keeps its session (the notice can
    /// come seconds late: it travels the outbox and the broker).
    pub fn secret_rotated(&self, gateway_id: Uuid, rotated_at: DateTime<Utc>) {
        if let Some(entry) = self.lock().get(&gateway_id)
            && entry.secret_rotated_at < rotated_at
        {
            entry.raise(Control::SecretRotated);
        }
    }

    pub fn control_all(&self, to: Control) {
        for entry in self.lock().values() {
            entry.raise(to);
        }
    }

    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic while holding this lock cannot leave the map half-updated.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_signal_is_only_ever_raised_and_survives_a_full_command_queue() {
        let (commands, _commands_rx) = mpsc::channel(1);
        let (control, mut rx) = watch::channel(Control::None);
        let entry = Entry {
            session_id: Uuid::nil(),
            secret_rotated_at: Utc::now(),
            commands,
            control,
        };
        // The command queue is full; control signals do not share it.
        assert!(entry.commands.try_send(()).is_ok());
        assert!(entry.commands.try_send(()).is_err());
        entry.raise(Control::SecretRotated);
        entry.raise(Control::CheckSecret);
        assert_eq!(*rx.borrow_and_update(), Control::SecretRotated);
        entry.raise(Control::Replaced);
        assert_eq!(*rx.borrow_and_update(), Control::Replaced);
        entry.raise(Control::SecretRotated);
        assert!(!rx.has_changed().unwrap_or(true), "not lowered");
    }
}
