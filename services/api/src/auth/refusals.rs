//! Refused token requests, counted and published once per window as
//! `pmcore.auth.logins-refused.v1`: the audit trail learns of every refusal without
//! one event per attempt, which a guessing attack would turn into a flood.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use pmcore_events::domain::{LoginsRefused, RefusedClient};
use pmcore_kafka::outbox::{self, EventMeta};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Distinct (client, reason) pairs kept per window; past it, refusals are counted
/// without their client, so made-up ids cannot grow memory.
const MAX_KEYS: usize = 10_000;
/// Pairs listed in one event, largest counts first.
const MAX_LISTED: usize = 100;

type Key = (Option<Uuid>, &'static str);

#[derive(Debug, Default)]
pub struct Refusals(Mutex<Window>);

#[derive(Debug, Default)]
struct Window {
    since: Option<DateTime<Utc>>,
    counts: HashMap<Key, u64>,
}

impl Refusals {
    pub fn record(&self, client: Option<Uuid>, reason: &'static str) {
        metrics::counter!("pmcore_api_logins_refused_total", "reason" => reason).increment(1);
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.since.get_or_insert_with(Utc::now);
        let key = if w.counts.len() >= MAX_KEYS && !w.counts.contains_key(&(client, reason)) {
            (None, reason)
        } else {
            (client, reason)
        };
        *w.counts.entry(key).or_default() += 1;
    }

    fn take(&self) -> Option<(DateTime<Utc>, HashMap<Key, u64>)> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let since = w.since.take()?;
        Some((since, std::mem::take(&mut w.counts)))
    }

    fn put_back(&self, since: DateTime<Utc>, counts: HashMap<Key, u64>) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.since = Some(w.since.map_or(since, |s| s.min(since)));
        for (k, n) in counts {
            *w.counts.entry(k).or_default() += n;
        }
    }

    /// Publishes the window's refusals, if any, through the outbox.
    pub async fn flush(&self, pool: &PgPool) -> anyhow::Result<()> {
        let Some((since, counts)) = self.take() else {
            return Ok(());
        };
        let event = summary(since, Utc::now(), &counts);
        let result = async {
            let mut tx = pool.begin().await?;
            let meta = EventMeta {
                source: "api".to_owned(),
                principal: None,
                traceparent: None,
            };
            outbox::enqueue(&mut tx, &event, &meta).await?;
            tx.commit().await?;
            anyhow::Ok(())
        }
        .await;
        if result.is_err() {
            // Counted again next window rather than lost.
            self.put_back(since, counts);
        }
        result
    }
}

fn summary(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    counts: &HashMap<Key, u64>,
) -> LoginsRefused {
    let mut clients: Vec<RefusedClient> = counts
        .iter()
        .map(|((client, reason), n)| RefusedClient {
            client_id: client.map(|c| c.to_string()),
            reason: (*reason).to_owned(),
            count: i64::try_from(*n).unwrap_or(i64::MAX),
        })
        .collect();
    clients.sort_by(|a, b| b.count.cmp(&a.count).then(a.client_id.cmp(&b.client_id)));
    clients.truncate(MAX_LISTED);
    LoginsRefused {
        window_start: since.timestamp_micros(),
        window_end: until.timestamp_micros(),
        total: counts
            .values()
            .map(|n| i64::try_from(*n).unwrap_or(i64::MAX))
            .sum(),
        clients,
    }
}

/// Flushes every `interval` until cancelled, and once more on the way out.
pub async fn run(
    refusals: std::sync::Arc<Refusals>,
    pool: PgPool,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        let stop = tokio::select! {
            () = cancel.cancelled() => true,
            () = tokio::time::sleep(interval) => false,
        };
        if let Err(error) = refusals.flush(&pool).await {
            tracing::warn!(error = format!("{error:#}"), "publishing refused logins");
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_per_client_and_reason_and_bounded() {
        let r = Refusals::default();
        let a = Uuid::now_v7();
        for _ in 0..3 {
            r.record(Some(a), "wrong_secret");
        }
        r.record(None, "unknown_client");
        for _ in 0..MAX_KEYS + 50 {
            r.record(Some(Uuid::now_v7()), "unknown_client");
        }
        let (since, counts) = r.take().expect("a window");
        assert!(counts.len() <= MAX_KEYS + 1);
        let event = summary(since, Utc::now(), &counts);
        assert_eq!(event.total, 3 + 1 + MAX_KEYS as i64 + 50);
        assert_eq!(event.clients.len(), MAX_LISTED);
        assert_eq!(
            event.clients[0].reason, "unknown_client",
            "the overflow bucket is largest"
        );
        assert!(
            event
                .clients
                .iter()
                .any(|c| c.client_id == Some(a.to_string()) && c.count == 3)
        );
        assert!(r.take().is_none(), "taken means empty");
    }
}
