//! Anomaly detection on the telemetry stream: a reading beyond the DER's
//! nameplate, a value that does not move for too long, and a silent gateway.
//!
//! The per-DER state lives in the consumer's memory. Telemetry is keyed by gateway,
//! so one worker sees all of a DER's readings in order; after a restart or a
//! rebalance a stuck value is found again, only later.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use pmcore_events::domain::{GatewayDisconnected, TelemetryAnomalyDetected};
use pmcore_kafka::outbox::{self, EventMeta};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Clone, clap::Args)]
pub struct AnomalyConfig {
    /// A reading whose magnitude exceeds nameplate × this factor is out of range.
    #[arg(
        long = "anomaly-range-factor",
        env = "PMCORE_WORKER_ANOMALY_RANGE_FACTOR",
        default_value_t = 1.1
    )]
    pub range_factor: f64,

    /// Seconds an unchanged non-zero value must last to be flagged as stuck.
    #[arg(
        long = "anomaly-stuck-after-s",
        env = "PMCORE_WORKER_ANOMALY_STUCK_AFTER_S",
        default_value_t = 900
    )]
    pub stuck_after_s: i64,

    /// Seconds without a frame from a gateway before it is flagged silent and
    /// marked offline.
    #[arg(
        long = "anomaly-silence-after-s",
        env = "PMCORE_WORKER_ANOMALY_SILENCE_AFTER_S",
        default_value_t = 300
    )]
    pub silence_after_s: i64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            range_factor: 1.1,
            stuck_after_s: 900,
            silence_after_s: 300,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DerInfo {
    pub organization_id: Uuid,
    pub nameplate_kw: f64,
}

#[derive(Debug, Default)]
struct DerState {
    out_of_range: bool,
    last_kw: Option<f64>,
    same_since: Option<DateTime<Utc>>,
    stuck_flagged: bool,
}

/// A flag to record: the row and its event commit with the readings.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub organization_id: Uuid,
    pub der_id: Uuid,
    pub kind: &'static str,
    pub detail: String,
    pub value_kw: f64,
    pub observed_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct Detector {
    config: AnomalyConfig,
    ders: HashMap<Uuid, DerInfo>,
    state: HashMap<Uuid, DerState>,
}

impl Detector {
    pub fn new(config: AnomalyConfig) -> Self {
        Self {
            config,
            ders: HashMap::new(),
            state: HashMap::new(),
        }
    }

    /// Loads nameplates of DERs not seen before.
    /// Whether every DER of `der_ids` is known already (nothing for [`Self::learn`] to do).
    pub fn knows_all(&self, der_ids: &[Uuid]) -> bool {
        der_ids.iter().all(|id| self.ders.contains_key(id))
    }

    pub async fn learn(&mut self, conn: &mut PgConnection, der_ids: &[Uuid]) -> sqlx::Result<()> {
        let mut missing: Vec<Uuid> = der_ids
            .iter()
            .filter(|id| !self.ders.contains_key(id))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        missing.dedup();
        let rows: Vec<(Uuid, Uuid, f64)> = sqlx::query_as(
            "select id, organization_id, nameplate_kw::float8 from pm.der where id = any($1)",
        )
        .bind(&missing)
        .fetch_all(conn)
        .await?;
        for (id, organization_id, nameplate_kw) in rows {
            self.ders.insert(
                id,
                DerInfo {
                    organization_id,
                    nameplate_kw,
                },
            );
        }
        Ok(())
    }

    /// Feeds one reading (in order per DER); returns a flag when one starts.
    pub fn observe(&mut self, der_id: Uuid, ts: DateTime<Utc>, kw: f64) -> Option<Anomaly> {
        let info = self.ders.get(&der_id)?;
        let state = self.state.entry(der_id).or_default();
        let anomaly = |kind, detail| Anomaly {
            organization_id: info.organization_id,
            der_id,
            kind,
            detail,
            value_kw: kw,
            observed_at: ts,
        };
        let limit = info.nameplate_kw * self.config.range_factor;
        let mut found = None;
        if kw.abs() > limit {
            if !state.out_of_range {
                state.out_of_range = true;
                found = Some(anomaly(
                    "out_of_range",
                    format!(
                        "{kw:.3} kW exceeds the nameplate of {:.3} kW by more than {:.0}%",
                        info.nameplate_kw,
                        (self.config.range_factor - 1.0) * 100.0
                    ),
                ));
            }
        } else {
            state.out_of_range = false;
        }
        // Zero is what idle DERs report (solar at night, a parked charger); only a
        // frozen non-zero value says the meter stopped.
        if kw != 0.0 && state.last_kw == Some(kw) {
            let since = *state.same_since.get_or_insert(ts);
            if !state.stuck_flagged && (ts - since).num_seconds() >= self.config.stuck_after_s {
                state.stuck_flagged = true;
                found = found.or_else(|| {
                    Some(anomaly(
                        "stuck_value",
                        format!("{kw:.3} kW unchanged since {since}"),
                    ))
                });
            }
        } else {
            state.same_since = Some(ts);
            state.stuck_flagged = false;
        }
        state.last_kw = Some(kw);
        found
    }
}

fn meta() -> EventMeta {
    EventMeta {
        source: "worker".to_owned(),
        principal: Some("service:worker".to_owned()),
        traceparent: None,
    }
}

/// How long a DER's flag of one kind stands for every reading around it: the
/// detector's memory is lost on a restart or a rebalance, and the batches read again
/// then would flag the same excursion a second time.
pub const SAME_ANOMALY_WITHIN: Duration = Duration::from_secs(3600);

/// Stores a flag and its event in the caller's transaction, unless the DER was
/// flagged for the same kind within [`SAME_ANOMALY_WITHIN`] of this reading (then it
/// is the same anomaly, seen again). Returns whether it was stored.
pub async fn record(conn: &mut PgConnection, a: &Anomaly) -> anyhow::Result<bool> {
    let id = Uuid::now_v7();
    let detected_at = Utc::now();
    let within = chrono::Duration::from_std(SAME_ANOMALY_WITHIN)?;
    // One worker holds a gateway's partition, so no two transactions flag a DER at once.
    let stored = sqlx::query(
        "insert into pm.telemetry_anomaly
             (id, organization_id, der_id, kind, detail, value_kw, observed_at, detected_at)
         select $1, $2, $3, $4, $5, $6, $7, $8
         where not exists (
             select 1 from pm.telemetry_anomaly
              where der_id = $3 and kind = $4
                and observed_at > $7 - $9::interval and observed_at < $7 + $9::interval)",
    )
    .bind(id)
    .bind(a.organization_id)
    .bind(a.der_id)
    .bind(a.kind)
    .bind(&a.detail)
    .bind(a.value_kw)
    .bind(a.observed_at)
    .bind(detected_at)
    .bind(within)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !stored {
        return Ok(false);
    }
    let event = TelemetryAnomalyDetected {
        anomaly_id: id.to_string(),
        organization_id: a.organization_id.to_string(),
        der_id: Some(a.der_id.to_string()),
        gateway_id: None,
        kind: a.kind.to_owned(),
        detail: a.detail.clone(),
        value_kw: Some(a.value_kw),
        observed_at: a.observed_at.timestamp_micros(),
        detected_at: detected_at.timestamp_micros(),
    };
    outbox::enqueue(conn, &event, &meta()).await?;
    Ok(true)
}

/// Every 30 s: gateways with DERs that have not been heard from for the silence
/// threshold are flagged once per silence and marked offline (a relay that died
/// cannot say so itself).
pub async fn watch_silence(pool: PgPool, config: AnomalyConfig, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep_silence(&pool, config.silence_after_s).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(gateways = n, "silent gateways flagged"),
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "silence sweep failed"),
        }
    }
}

pub async fn sweep_silence(pool: &PgPool, silence_after_s: i64) -> anyhow::Result<usize> {
    let silent: Vec<(Uuid, Uuid, DateTime<Utc>, bool)> = sqlx::query_as(
        "select g.id, g.organization_id, g.last_seen_at, g.online from pm.gateway g
         where g.last_seen_at < now() - make_interval(secs => $1)
           and exists (select 1 from pm.der d where d.gateway_id = g.id and d.status = 'active')
           and not exists (select 1 from pm.telemetry_anomaly a
                           where a.kind = 'gateway_silent' and a.gateway_id = g.id
                             and a.observed_at = g.last_seen_at)",
    )
    .bind(silence_after_s as f64)
    .fetch_all(pool)
    .await?;
    let mut flagged = 0;
    for (gateway_id, organization_id, last_seen_at, online) in silent {
        let mut tx = pool.begin().await?;
        let id = Uuid::now_v7();
        let detected_at = Utc::now();
        let detail = format!("no frame from the gateway since {last_seen_at}");
        let inserted = sqlx::query(
            "insert into pm.telemetry_anomaly
                 (id, organization_id, gateway_id, kind, detail, observed_at, detected_at)
             values ($1, $2, $3, 'gateway_silent', $4, $5, $6)
             on conflict (gateway_id, observed_at) where kind = 'gateway_silent' do nothing",
        )
        .bind(id)
        .bind(organization_id)
        .bind(gateway_id)
        .bind(&detail)
        .bind(last_seen_at)
        .bind(detected_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            continue;
        }
        let event = TelemetryAnomalyDetected {
            anomaly_id: id.to_string(),
            organization_id: organization_id.to_string(),
            der_id: None,
            gateway_id: Some(gateway_id.to_string()),
            kind: "gateway_silent".to_owned(),
            detail,
            value_kw: None,
            observed_at: last_seen_at.timestamp_micros(),
            detected_at: detected_at.timestamp_micros(),
        };
        outbox::enqueue(&mut tx, &event, &meta()).await?;
        let went_offline = sqlx::query(
            "update pm.gateway set online = false, session_id = null
             where id = $1 and online and last_seen_at = $2",
        )
        .bind(gateway_id)
        .bind(last_seen_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if went_offline && online {
            let event = GatewayDisconnected {
                gateway_id: gateway_id.to_string(),
                organization_id: organization_id.to_string(),
                session_id: Uuid::nil().to_string(),
                reason: "silent".to_owned(),
                disconnected_at: detected_at.timestamp_micros(),
            };
            outbox::enqueue(&mut tx, &event, &meta()).await?;
        }
        tx.commit().await?;
        flagged += 1;
    }
    Ok(flagged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> (Detector, Uuid) {
        let mut d = Detector::new(AnomalyConfig {
            range_factor: 1.1,
            stuck_after_s: 60,
            silence_after_s: 300,
        });
        let der = Uuid::now_v7();
        d.ders.insert(
            der,
            DerInfo {
                organization_id: Uuid::nil(),
                nameplate_kw: 10.0,
            },
        );
        (d, der)
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn out_of_range_flags_once_per_excursion() {
        let (mut d, der) = detector();
        assert_eq!(d.observe(der, at(0), 10.9), None);
        let flag = d.observe(der, at(1), -11.5).expect("flagged");
        assert_eq!(flag.kind, "out_of_range");
        assert_eq!(d.observe(der, at(2), 12.0), None, "same excursion");
        assert_eq!(d.observe(der, at(3), 5.0), None);
        assert!(d.observe(der, at(4), 20.0).is_some(), "a new excursion");
    }

    #[test]
    fn stuck_value_after_the_threshold_and_never_zero() {
        let (mut d, der) = detector();
        for s in 0..60 {
            assert_eq!(d.observe(der, at(s), 4.2), None, "at {s}s");
        }
        let flag = d.observe(der, at(60), 4.2).expect("stuck");
        assert_eq!(flag.kind, "stuck_value");
        assert_eq!(d.observe(der, at(61), 4.2), None, "flagged once");
        for s in 100..300 {
            assert_eq!(d.observe(der, at(s), 0.0), None, "idle is not stuck");
        }
    }

    #[test]
    fn unknown_ders_are_not_judged() {
        let (mut d, _) = detector();
        assert_eq!(d.observe(Uuid::now_v7(), at(0), 1e6), None);
    }
}
