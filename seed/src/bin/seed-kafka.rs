//! `seed-kafka`: publish the current programs (`--pm`), DERs (`--der-warehouse`) and
//! gateways (`--der-gateway`) as events, for a subscriber that joins late; no flag
//! means all three. Idempotent: see `pmcore_seed::state`. `just seed-kafka` runs it and
//! then sends the telemetry history.

use std::time::Instant;

use clap::Parser;
use pmcore_db::DbConfig;
use pmcore_kafka::{KafkaConfig, idempotent_producer, record_headers};
use pmcore_seed::state::{self, Record};
use rdkafka::producer::FutureRecord;

#[derive(Debug, Parser)]
#[command(
    name = "seed-kafka",
    about = "Publish the current programs, DERs and gateways as events (idempotent)"
)]
struct Cli {
    /// Programs (the program-management application).
    #[arg(long)]
    pm: bool,
    /// DERs (the DER warehouse).
    #[arg(long)]
    der_warehouse: bool,
    /// Gateways (the DER gateway application).
    #[arg(long)]
    der_gateway: bool,
    #[command(flatten)]
    database: DbConfig,
    #[command(flatten)]
    kafka: KafkaConfig,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let all = !(cli.pm || cli.der_warehouse || cli.der_gateway);
    let pool = pmcore_db::lazy_pool(&cli.database)?;
    let mut parts: Vec<(&str, Vec<Record>)> = Vec::new();
    if all || cli.pm {
        parts.push(("programs", state::programs(&pool).await?));
    }
    if all || cli.der_warehouse {
        parts.push(("DERs", state::ders(&pool).await?));
    }
    if all || cli.der_gateway {
        parts.push(("gateways", state::gateways(&pool).await?));
    }
    let topics: Vec<String> = parts
        .iter()
        .flat_map(|(_, records)| records.iter().map(|r| cli.kafka.topic(r.topic)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    pmcore_kafka::topics::ensure(&cli.kafka, &topics).await?;
    let producer = idempotent_producer(&cli.kafka)?;
    for (what, records) in parts {
        let started = Instant::now();
        let sends = records.iter().map(|r| {
            let topic = cli.kafka.topic(r.topic);
            let producer = &producer;
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .key(&r.key)
                            .payload(&r.value)
                            .headers(record_headers(r.headers.iter().cloned())),
                        std::time::Duration::from_secs(30),
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("publishing to {topic}: {e}"))
            }
        });
        let sent = futures::future::try_join_all(sends).await?.len();
        eprintln!(
            "seed-kafka: {sent} {what} published in {:.1} s (same state, same ce_id: consumers take each once)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
