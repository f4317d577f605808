//! History through the live path: readings for past instants, sent by each
//! gateway over the relay in full frames, so they land exactly as live ones do.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use pmcore_der_gateway_relay::protocol::{ErrorCode, GatewayFrame, RelayFrame, WireReading};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    fleet::{Fleet, GatewaySpec},
    profiles::{self, Kind},
    sim::{self, MAX_READINGS},
};

/// Frames one gateway keeps unacknowledged during a backfill.
const WINDOW: usize = 8;

/// Sends readings from `from` to `to` every `step` for every DER of the fleet,
/// `concurrency` gateways at a time. Returns the readings acknowledged.
pub async fn backfill(
    fleet: &Fleet,
    url: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
    concurrency: usize,
) -> anyhow::Result<u64> {
    let step = chrono::Duration::from_std(step)?;
    let steps = ((to - from).num_seconds() / step.num_seconds().max(1)).max(0) as u64;
    let total = steps * fleet.ders() as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{spinner} backfill [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} readings ({per_sec}, eta {eta})",
        )?,
    );
    let results: Vec<anyhow::Result<u64>> = stream::iter(fleet.gateways.iter())
        .map(|g| one_gateway(g, url, from, to, step, &bar))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish();
    let mut acked = 0;
    for r in results {
        acked += r?;
    }
    Ok(acked)
}

async fn one_gateway(
    spec: &GatewaySpec,
    url: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: chrono::Duration,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let kinds: Vec<Kind> = spec.ders.iter().map(|d| Kind::parse(&d.der_type)).collect();
    let mut frames = Vec::new();
    let mut readings = Vec::with_capacity(MAX_READINGS);
    let mut ts = from;
    while ts < to {
        for (der, kind) in spec.ders.iter().zip(&kinds) {
            readings.push(WireReading {
                der_id: der.id,
                ts,
                power_kw: profiles::power_kw(*kind, der.id, der.nameplate_kw, ts),
                soc_pct: profiles::soc_pct(*kind, ts),
            });
            if readings.len() == MAX_READINGS {
                frames.push(std::mem::take(&mut readings));
            }
        }
        ts += step;
    }
    if !readings.is_empty() {
        frames.push(readings);
    }
    let mut acked = 0;
    let mut next = 0;
    // Reconnects resume with what was not acknowledged.
    let mut unacked: BTreeMap<usize, (String, u64)> = BTreeMap::new();
    let mut attempts = 0;
    while next < frames.len() || !unacked.is_empty() {
        let mut socket = match sim::connect(url, spec, "sim-backfill").await {
            Ok(s) => s,
            Err(e @ sim::SimError::Refused(..)) => return Err(e.into()),
            Err(e) => {
                attempts += 1;
                anyhow::ensure!(attempts < 20, "gateway {}: {e}", spec.id);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for (text, _) in unacked.values() {
            socket.send(Message::Text(text.clone().into())).await?;
        }
        loop {
            while unacked.len() < WINDOW && next < frames.len() {
                let frame = GatewayFrame::Telemetry {
                    batch_id: format!("bf-{}-{next}", spec.id.simple()),
                    readings: std::mem::take(&mut frames[next]),
                };
                let count = match &frame {
                    GatewayFrame::Telemetry { readings, .. } => readings.len() as u64,
                    _ => 0,
                };
                let text = serde_json::to_string(&frame)?;
                socket.send(Message::Text(text.clone().into())).await?;
                unacked.insert(next, (text, count));
                next += 1;
            }
            if unacked.is_empty() {
                let _ = socket.close(None).await;
                return Ok(acked);
            }
            let Some(Ok(Message::Text(text))) = socket.next().await else {
                break;
            };
            match serde_json::from_str::<RelayFrame>(&text)? {
                RelayFrame::TelemetryAck { batch_id } => {
                    let index = batch_id.rsplit('-').next().and_then(|n| n.parse().ok());
                    if let Some((_, count)) = index.and_then(|i| unacked.remove(&i)) {
                        acked += count;
                        bar.inc(count);
                    }
                }
                RelayFrame::Error {
                    code: ErrorCode::Unavailable | ErrorCode::RateLimited,
                    batch_id: Some(batch_id),
                    ..
                } => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let index: Option<usize> =
                        batch_id.rsplit('-').next().and_then(|n| n.parse().ok());
                    if let Some((text, _)) = index.and_then(|i| unacked.get(&i)) {
                        socket.send(Message::Text(text.clone().into())).await?;
                    }
                }
                RelayFrame::Error { code, message, .. } => {
                    anyhow::bail!(
                        "gateway {}: relay refused a frame ({}): {message}",
                        spec.id,
                        code.as_str()
                    )
                }
                _ => {}
            }
        }
    }
    Ok(acked)
}
