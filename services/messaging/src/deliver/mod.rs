//! The senders: lease due deliveries, send each on its own task, record the attempt.
//!
//! Leases (`leased_until`) are taken in a short transaction with `SKIP LOCKED` and a
//! re-checked condition, so any number of instances share the queue and none sends a
//! row another holds. A lease outlives the longest attempt; an instance that dies
//! mid-send leaves rows that another takes up when their lease runs out. At most
//! [`Senders::per_target`] attempts to one endpoint or contact are in flight, so a
//! receiver that hangs holds a few slots, never the whole pool.

pub mod email;
mod record;
pub mod webhook;

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lettre::message::Mailbox;
use pmcore_runtime::clock::SharedClock;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    kinds, render,
    sealed::SecretsKey,
    store::{self, NewMessage, Recipients},
};

/// How an attempt went.
#[derive(Debug)]
pub enum Outcome {
    Delivered {
        code: Option<i32>,
        response: Option<String>,
        latency: Duration,
    },
    /// `410 Gone`: the receiver wants no more; the endpoint is disabled.
    Gone {
        code: Option<i32>,
        response: Option<String>,
        latency: Duration,
    },
    Failed {
        code: Option<i32>,
        response: Option<String>,
        error: String,
        retry_after: Option<chrono::Duration>,
        latency: Duration,
    },
}

impl Outcome {
    fn failed(
        code: Option<i32>,
        response: Option<String>,
        error: String,
        started: Instant,
    ) -> Self {
        Outcome::Failed {
            code,
            response,
            error,
            retry_after: None,
            latency: started.elapsed(),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Gone { .. } => "gone",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// An endpoint's configured rate and the limiter enforcing it.
type EndpointLimit = (i32, Arc<DefaultDirectRateLimiter>);

/// Everything the senders need. Cheap to clone.
#[derive(Clone)]
pub struct Senders {
    pub pool: PgPool,
    pub clock: SharedClock,
    pub secrets: Arc<SecretsKey>,
    pub http: reqwest::Client,
    pub mailer: Option<email::Mailer>,
    pub from: Mailbox,
    pub allow_private: bool,
    /// Attempts in flight in this instance.
    pub max_in_flight: usize,
    /// Attempts in flight to one endpoint or contact.
    pub per_target: i64,
    /// How long a lease lasts: longer than the longest attempt.
    pub lease: Duration,
    /// How often to look for due retries when nothing wakes the senders.
    pub poll: Duration,
    /// An endpoint failing every attempt for this long is disabled.
    pub disable_after: chrono::Duration,
    limiters: Arc<Mutex<HashMap<Uuid, EndpointLimit>>>,
    /// Attempts in flight per endpoint or contact, in this instance.
    in_flight: Arc<Mutex<HashMap<Uuid, i64>>>,
}

impl std::fmt::Debug for Senders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Senders")
            .field("max_in_flight", &self.max_in_flight)
            .field("per_target", &self.per_target)
            .finish_non_exhaustive()
    }
}

/// A leased delivery with what it takes to send it.
#[derive(Debug, sqlx::FromRow)]
struct Due {
    id: Uuid,
    attempts: i32,
    message_id: Uuid,
    organization_id: Uuid,
    kind: String,
    data: Value,
    created_at: DateTime<Utc>,
    endpoint_id: Option<Uuid>,
    url: Option<String>,
    enabled: Option<bool>,
    rate_limit_per_s: Option<i32>,
    secret_sealed: Option<Vec<u8>>,
    previous_sealed: Option<Vec<u8>>,
    previous_expires_at: Option<DateTime<Utc>>,
    contact_id: Option<Uuid>,
    email: Option<String>,
}

impl Due {
    /// The endpoint or contact it goes to.
    fn target(&self) -> Uuid {
        self.endpoint_id.or(self.contact_id).unwrap_or(self.id)
    }
}

impl Senders {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        secrets: Arc<SecretsKey>,
        http: reqwest::Client,
        mailer: Option<email::Mailer>,
        from: Mailbox,
        allow_private: bool,
        lease: Duration,
    ) -> Self {
        Self {
            pool,
            clock,
            secrets,
            http,
            mailer,
            from,
            allow_private,
            max_in_flight: 64,
            per_target: 4,
            lease,
            poll: Duration::from_secs(1),
            disable_after: chrono::Duration::days(5),
            limiters: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// Runs until `cancel`, then lets the attempts in flight finish.
    pub async fn run(self, cancel: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.max_in_flight));
        let mut tasks = JoinSet::new();
        let (recorder, finished) = mpsc::channel(self.max_in_flight.max(1) * 2);
        let recording = tokio::spawn(record::run(self.pool.clone(), self.disable_after, finished));
        let mut listener = self.listen().await;
        loop {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            // Lease in batches: one lease per finished attempt would cost a round trip
            // (and a look at the queue) per delivery.
            let batch = (self.max_in_flight / 2).max(1);
            let asked = if free == 0 || (free < batch && !tasks.is_empty()) {
                0
            } else {
                free
            };
            let leased = if asked == 0 {
                Vec::new()
            } else {
                // A lease query slower than the lease itself has lost its point.
                let leasing = pmcore_db::bounded(self.lease, self.lease(asked));
                match leasing.await {
                    Ok(rows) => rows,
                    Err(error) => {
                        tracing::warn!(error = %error, "leasing deliveries");
                        Vec::new()
                    }
                }
            };
            // A full batch: more may be due at once.
            let more = asked > 0 && leased.len() == asked;
            for due in leased {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let senders = self.clone();
                let recorder = recorder.clone();
                tasks.spawn(async move {
                    let target = due.target();
                    senders.attempt(due, recorder).await;
                    senders.done(target);
                    drop(permit);
                });
            }
            if more {
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(self.poll) => {}
                () = wake(&mut listener) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
        // What finished is written before the service stops.
        drop(recorder);
        let _ = recording.await;
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "no LISTEN connection; polling only"))
            .ok()?;
        listener.listen(store::WAKE_CHANNEL).await.ok()?;
        Some(listener)
    }

    /// Leases up to `limit` due deliveries, at most `per_target` in flight per target
    /// in this instance.
    ///
    /// Oldest first from the due index, skipping targets already at their cap, so a
    /// backlog for one dead endpoint is stepped over rather than scanned into every
    /// batch; the cap within a batch is applied here.
    async fn lease(&self, limit: usize) -> sqlx::Result<Vec<Due>> {
        let started = Instant::now();
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        // The queue's statistics are stale by nature (a burst adds 100,000 rows in
        // seconds): planned on them, the due query read every due row and sorted
        // them (29 ms a lease at 70,000 due) instead of walking the due index in
        // order. The queries here are index walks whatever the statistics say.
        sqlx::query("set local enable_bitmapscan = off")
            .execute(&mut *tx)
            .await?;
        sqlx::query("set local enable_seqscan = off")
            .execute(&mut *tx)
            .await?;
        let mut room: HashMap<Uuid, i64> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let full: Vec<Uuid> = room
            .iter()
            .filter(|(_, n)| **n >= self.per_target)
            .map(|(t, _)| *t)
            .collect();
        let candidates: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "select id, coalesce(endpoint_id, contact_id)
               from messaging.delivery
              where status = 'pending' and next_attempt_at <= $1
                and (leased_until is null or leased_until < $1)
                and coalesce(endpoint_id, contact_id) <> all($2)
              order by next_attempt_at
              limit $3",
        )
        .bind(now)
        .bind(&full)
        .bind(i64::try_from(limit.saturating_mul(4)).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(limit);
        for (id, target) in candidates {
            let used = room.entry(target).or_insert(0);
            if *used < self.per_target {
                *used += 1;
                ids.push(id);
                if ids.len() == limit {
                    break;
                }
            }
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Re-checked under the row lock, and rows another instance is leasing right
        // now are skipped rather than waited for.
        let leased: Vec<Uuid> = sqlx::query_scalar(
            "update messaging.delivery set leased_until = $2
              where id in (select id from messaging.delivery where id = any($1)
                             and status = 'pending'
                             and (leased_until is null or leased_until < $3)
                           for update skip locked)
              returning id",
        )
        .bind(&ids)
        .bind(until)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let rows = sqlx::query_as::<_, Due>(
            "select d.id, d.attempts, m.id as message_id, m.organization_id, m.kind, m.data,
                    m.created_at, d.endpoint_id, e.url, e.enabled, e.rate_limit_per_s,
                    e.secret_sealed, e.previous_sealed, e.previous_expires_at,
                    d.contact_id, c.email
               from messaging.delivery d
               join messaging.message m on m.id = d.message_id
               left join messaging.endpoint e on e.id = d.endpoint_id
               left join messaging.contact c on c.id = d.contact_id
              where d.id = any($1)",
        )
        .bind(&leased)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::histogram!("pmcore_messaging_lease_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(
            rows = rows.len(),
            ms = started.elapsed().as_millis(),
            "leased"
        );
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for due in &rows {
            *in_flight.entry(due.target()).or_insert(0) += 1;
        }
        Ok(rows)
    }

    fn done(&self, target: Uuid) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = in_flight.get_mut(&target) {
            *n -= 1;
            if *n <= 0 {
                in_flight.remove(&target);
            }
        }
    }

    async fn attempt(&self, due: Due, recorder: mpsc::Sender<record::Finished>) {
        let now = self.clock.now();
        let outcome = if due.endpoint_id.is_some() {
            if due.enabled != Some(true) {
                return self
                    .drop_delivery(due.id, "the endpoint was disabled or deleted")
                    .await;
            }
            if let Some(wait) = self.over_rate(&due) {
                return self.postpone(due.id, now + wait).await;
            }
            self.webhook(&due, now).await
        } else if due.contact_id.is_some() && due.email.is_some() {
            self.email(&due).await
        } else {
            return self.drop_delivery(due.id, "the contact was deleted").await;
        };
        let channel = if due.endpoint_id.is_some() {
            "webhook"
        } else {
            "email"
        };
        metrics::counter!("pmcore_messaging_attempts_total", "channel" => channel, "outcome" => outcome.label())
            .increment(1);
        if let Outcome::Delivered { .. } = outcome {
            let lag = (now - due.created_at).to_std().unwrap_or_default();
            metrics::histogram!("pmcore_messaging_delivery_lag_seconds", "channel" => channel)
                .record(lag.as_secs_f64());
        }
        let finished = record::Finished {
            delivery: due.id,
            endpoint: due.endpoint_id,
            attempts: due.attempts,
            outcome,
            at: now,
        };
        if recorder.send(finished).await.is_err() {
            tracing::warn!(delivery = %due.id, "the recorder is gone; the lease will run out");
        }
    }

    /// The webhook body: the Standard Webhooks shape.
    fn body(due: &Due) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": due.kind,
            "timestamp": due.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": due.data,
        }))
        .unwrap_or_default()
    }

    async fn webhook(&self, due: &Due, now: DateTime<Utc>) -> Outcome {
        let started = Instant::now();
        let mut sealed = vec![due.secret_sealed.as_deref()];
        // A rotated secret signs too until its grace period ends.
        if due.previous_expires_at.is_some_and(|at| at > now) {
            sealed.push(due.previous_sealed.as_deref());
        }
        let mut keys = Vec::new();
        for secret in sealed.into_iter().flatten() {
            match self.secrets.open(secret) {
                Ok(plain) => keys.push(
                    crate::signature::key_bytes(&String::from_utf8_lossy(&plain))
                        .unwrap_or_default(),
                ),
                Err(e) => return Outcome::failed(None, None, e.to_string(), started),
            }
        }
        let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let id = format!("msg_{}", due.message_id.simple());
        let body = Self::body(due);
        let request = webhook::Request {
            url: due.url.as_deref().unwrap_or_default(),
            id: &id,
            body: &body,
            keys: &key_refs,
        };
        webhook::send(&self.http, &request, now, self.allow_private).await
    }

    async fn email(&self, due: &Due) -> Outcome {
        let started = Instant::now();
        let Some(mailer) = &self.mailer else {
            return Outcome::failed(None, None, "no SMTP server configured".into(), started);
        };
        let mail = match self.rendered(due).await {
            Ok(m) => m,
            Err(e) => return Outcome::failed(None, None, e, started),
        };
        let id = format!("msg_{}.{}", due.message_id.simple(), due.id.simple());
        email::send(
            mailer,
            &self.from,
            due.email.as_deref().unwrap_or_default(),
            &mail,
            &id,
        )
        .await
    }

    async fn rendered(&self, due: &Due) -> Result<render::Rendered, String> {
        let custom: Option<(String, String)> = sqlx::query_as(
            "select subject, body from messaging.template where organization_id = $1 and kind = $2",
        )
        .bind(due.organization_id)
        .bind(&due.kind)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        let (subject, body) = match &custom {
            Some((s, b)) => (s.as_str(), b.as_str()),
            None => {
                let kind = kinds::find(&due.kind).ok_or("unknown kind")?;
                (kind.subject, kind.body)
            }
        };
        let mut context = due.data.clone();
        if let Some(map) = context.as_object_mut() {
            map.insert("kind".into(), json!(due.kind));
            map.insert("organization_id".into(), json!(due.organization_id));
        }
        render::render(subject, body, &context)
    }

    /// `Some(wait)` when the endpoint's own rate limit says not yet.
    fn over_rate(&self, due: &Due) -> Option<chrono::Duration> {
        let (endpoint, rate) = (due.endpoint_id?, due.rate_limit_per_s?);
        let per_second = NonZeroU32::new(u32::try_from(rate).ok()?)?;
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            let entry = limiters.entry(endpoint).or_insert_with(|| {
                (
                    rate,
                    Arc::new(RateLimiter::direct(Quota::per_second(per_second))),
                )
            });
            if entry.0 != rate {
                *entry = (
                    rate,
                    Arc::new(RateLimiter::direct(Quota::per_second(per_second))),
                );
            }
            entry.1.clone()
        };
        limiter
            .check()
            .err()
            .map(|_| chrono::Duration::milliseconds(1000 / i64::from(per_second.get()) + 1))
    }

    async fn postpone(&self, id: Uuid, at: DateTime<Utc>) {
        let result = sqlx::query(
            "update messaging.delivery set next_attempt_at = $2, leased_until = null where id = $1",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await;
        if let Err(e) = result {
            tracing::warn!(delivery = %id, error = %e, "postponing a delivery");
        }
    }

    async fn drop_delivery(&self, id: Uuid, reason: &str) {
        let result = sqlx::query(
            "update messaging.delivery set status = 'dropped', last_error = $2, leased_until = null
              where id = $1",
        )
        .bind(id)
        .bind(reason)
        .execute(&self.pool)
        .await;
        if let Err(e) = result {
            tracing::warn!(delivery = %id, error = %e, "dropping a delivery");
        }
    }
}

/// Disables an endpoint, drops what was queued for it, and tells the organization's
/// contacts (its webhooks may be what is broken).
pub async fn disable(
    conn: &mut PgConnection,
    endpoint: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let disabled: Option<(Uuid, String)> = sqlx::query_as(
        "update messaging.endpoint set enabled = false, disabled_reason = $2, updated_at = $3
          where id = $1 and enabled
          returning organization_id, url",
    )
    .bind(endpoint)
    .bind(reason)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((organization_id, url)) = disabled else {
        return Ok(());
    };
    store::drop_pending(
        &mut *conn,
        store::Target::Endpoint(endpoint),
        "the endpoint was disabled",
    )
    .await?;
    tracing::warn!(%endpoint, %url, reason, "webhook endpoint disabled");
    metrics::counter!("pmcore_messaging_endpoints_disabled_total").increment(1);
    let data = json!({"endpoint_id": endpoint, "url": url, "reason": reason});
    // One notice per disabling: the id is fresh, the same disabling commits once.
    let message = NewMessage {
        organization_id,
        kind: "endpoint.disabled",
        source_event_id: Uuid::now_v7(),
        subject: &endpoint.to_string(),
        data: &data,
    };
    store::create_message(conn, &message, Recipients::Contacts, now)
        .await
        .map(|_| ())
}

async fn wake(listener: &mut Option<PgListener>) {
    match listener {
        Some(l) => {
            if l.recv().await.is_err() {
                // sqlx reconnects on the next recv; don't spin meanwhile.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        None => std::future::pending().await,
    }
}
