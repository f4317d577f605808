//! `gateway-sim`: simulated edge gateways against a running relay.
//!
//! ```text
//! gateway-sim run                      # the seeded fleet, live, until Ctrl-C
//! gateway-sim backfill --days 14       # history at 5-minute steps, with progress
//! gateway-sim provision --gateways 40 --ders-per-gateway 500 --fleet bench.json
//! ```

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use clap::{Args, Parser, Subcommand};
use pmcore_seed::{
    backfill,
    fleet::Fleet,
    sim::{Gateway, Options, Stats},
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "gateway-sim",
    about = "Simulated DER gateways for a pmcore relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Source {
    /// The relay's gateway endpoint.
    #[arg(
        long,
        env = "PMCORE_SIM_RELAY",
        default_value = "ws://127.0.0.1:3005/v1/gateway"
    )]
    relay: String,
    /// The REST API, to find the seeded gateways when there is no fleet file yet.
    #[arg(long, env = "PMCORE_SEED_API", default_value = "http://127.0.0.1:3001")]
    api: String,
    /// Aggregator credentials written by `seed`.
    #[arg(long, default_value = "seed/out/credentials.json")]
    credentials: PathBuf,
    /// Gateways, secrets and DERs; created from the API (rotating the secrets) if missing.
    #[arg(long, default_value = "seed/out/gateways.json")]
    fleet: PathBuf,
    /// Play only the first N gateways.
    #[arg(long)]
    gateways: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream live telemetry and obey commands.
    Run {
        #[command(flatten)]
        source: Source,
        /// Milliseconds between two readings of a DER.
        #[arg(long, default_value_t = 1000)]
        reading_interval_ms: u64,
        /// Milliseconds between two telemetry frames of a gateway.
        #[arg(long, default_value_t = 1000)]
        batch_interval_ms: u64,
        /// Stop after this many seconds (0: run until Ctrl-C).
        #[arg(long, default_value_t = 0)]
        duration_s: u64,
        /// Seconds between two progress lines.
        #[arg(long, default_value_t = 5)]
        report_every_s: u64,
    },
    /// Send history through the relay, e.g. 14 days of 5-minute readings.
    Backfill {
        #[command(flatten)]
        source: Source,
        #[arg(long, default_value_t = 14)]
        days: i64,
        /// Seconds between two readings of a DER.
        #[arg(long, default_value_t = 300)]
        step_s: u64,
        /// Gateways sending at the same time.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Register a fleet of its own (in the first seeded aggregator) for benchmarks.
    Provision {
        #[command(flatten)]
        source: Source,
        #[arg(long, default_value_t = 10)]
        ders_per_gateway: usize,
        #[arg(long, default_value = "bench")]
        label: String,
        /// Gateways to create.
        #[arg(long = "count", default_value_t = 10)]
        count: usize,
    },
}

async fn fleet(source: &Source) -> anyhow::Result<Fleet> {
    let mut fleet = match Fleet::load(&source.fleet)? {
        Some(f) => f,
        None => {
            eprintln!(
                "gateway-sim: no {}; taking the seeded gateways from the API",
                source.fleet.display()
            );
            let f = Fleet::discover(&source.api, &source.credentials).await?;
            f.save(&source.fleet)?;
            f
        }
    };
    if let Some(n) = source.gateways {
        fleet.gateways.truncate(n);
    }
    anyhow::ensure!(
        !fleet.gateways.is_empty(),
        "the fleet has no gateways with DERs"
    );
    Ok(fleet)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tracing_subscriber_init();
    match Cli::parse().command {
        Command::Run {
            source,
            reading_interval_ms,
            batch_interval_ms,
            duration_s,
            report_every_s,
        } => {
            let fleet = fleet(&source).await?;
            let opts = Options {
                url: source.relay.clone(),
                reading_every: Duration::from_millis(reading_interval_ms.max(1)),
                batch_every: Duration::from_millis(batch_interval_ms.max(10)),
                max_unacked: 256,
            };
            run(fleet, opts, duration_s, report_every_s).await
        }
        Command::Backfill {
            source,
            days,
            step_s,
            concurrency,
        } => {
            let fleet = fleet(&source).await?;
            let to = chrono::Utc::now() - chrono::Duration::minutes(1);
            let from = to - chrono::Duration::days(days);
            eprintln!(
                "gateway-sim: backfilling {days} days every {step_s} s for {} DERs behind {} gateways",
                fleet.ders(),
                fleet.gateways.len()
            );
            let started = Instant::now();
            let acked = backfill::backfill(
                &fleet,
                &source.relay,
                from,
                to,
                Duration::from_secs(step_s),
                concurrency,
            )
            .await?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "gateway-sim: {acked} readings acknowledged in {secs:.1} s ({:.0}/s)",
                acked as f64 / secs
            );
            Ok(())
        }
        Command::Provision {
            source,
            ders_per_gateway,
            label,
            count,
        } => {
            let fleet = Fleet::provision(
                &source.api,
                &source.credentials,
                count,
                ders_per_gateway,
                &label,
            )
            .await?;
            fleet.save(&source.fleet)?;
            eprintln!(
                "gateway-sim: {} gateways, {} DERs in {}",
                fleet.gateways.len(),
                fleet.ders(),
                source.fleet.display()
            );
            Ok(())
        }
    }
}

async fn run(
    fleet: Fleet,
    opts: Options,
    duration_s: u64,
    report_every_s: u64,
) -> anyhow::Result<()> {
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let ders = fleet.ders();
    let gateways = fleet.gateways.len();
    let mut tasks = tokio::task::JoinSet::new();
    for spec in fleet.gateways {
        let gateway = Gateway::new(spec, opts.clone(), stats.clone());
        tasks.spawn(gateway.run(cancel.clone()));
    }
    eprintln!(
        "gateway-sim: {gateways} gateways, {ders} DERs → {}",
        opts.url
    );
    let started = Instant::now();
    let stop = {
        let cancel = cancel.clone();
        async move {
            if duration_s == 0 {
                let _ = tokio::signal::ctrl_c().await;
            } else {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = tokio::time::sleep(Duration::from_secs(duration_s)) => {}
                }
            }
            cancel.cancel();
        }
    };
    tokio::spawn(stop);
    let mut report = tokio::time::interval(Duration::from_secs(report_every_s.max(1)));
    report.tick().await;
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = report.tick() => {
                let acked = stats.acked.load(Relaxed);
                let rate = (acked - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), acked);
                eprintln!(
                    "gateway-sim: {:>4} connected, {acked} readings acked ({rate:.0}/s), {} unacked, {} refused, {} commands",
                    stats.connected.load(Relaxed),
                    stats.generated.load(Relaxed) - acked - stats.refused.load(Relaxed),
                    stats.refused.load(Relaxed),
                    stats.commands.load(Relaxed),
                );
            }
        }
    }
    let mut refused = 0;
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Err(error)) = joined {
            refused += 1;
            eprintln!("gateway-sim: {error}");
        }
    }
    if refused > 0 {
        eprintln!(
            "gateway-sim: {refused} gateways refused; a fleet file from an older database? \
             delete it (seed/out/gateways.json) to take the gateways from the API again"
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "gateways": gateways,
        "ders": ders,
        "seconds": secs,
        "generated": stats.generated.load(Relaxed),
        "acked": stats.acked.load(Relaxed),
        "refused": stats.refused.load(Relaxed),
        "resent_frames": stats.resent.load(Relaxed),
        "connects": stats.connects.load(Relaxed),
        "commands": stats.commands.load(Relaxed),
    });
    // The summary is the program's output; progress went to stderr.
    #[allow(clippy::print_stdout)]
    {
        println!("{summary}");
    }
    Ok(())
}

/// Warnings (refused batches, relay errors) to stderr; `RUST_LOG` for more.
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
