//! `seed`: the demo's data, written through the REST API the way an integrator would:
//! a utility, two aggregators with API clients, three programs, about 1,000 DERs on 20
//! feeders behind 50 gateways, and enrollments in the open program. Running it again
//! creates only what is missing. Client credentials go to `seed/out/credentials.json`.

use pmcore_seed::api;

use std::{collections::HashSet, path::PathBuf};

use clap::Parser;
use serde_json::{Value, json};

use pmcore_seed::{api::Api, fleet::DER_TYPES};

#[derive(Debug, Parser)]
#[command(
    name = "seed",
    about = "Seed a development stack through its REST API (idempotent)"
)]
struct Cli {
    /// Base URL of the api.
    #[arg(long, env = "PMCORE_SEED_API", default_value = "http://127.0.0.1:3001")]
    api: String,
    /// An admin client (the development bootstrap client by default).
    #[arg(long, env = "PMCORE_BOOTSTRAP_CLIENT_ID")]
    client_id: String,
    #[arg(long, env = "PMCORE_BOOTSTRAP_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// DERs per aggregator.
    #[arg(long, default_value_t = 500)]
    ders_per_aggregator: usize,
    /// Gateways per aggregator.
    #[arg(long, default_value_t = 25)]
    gateways_per_aggregator: usize,
    /// Where to write the aggregators' client credentials.
    #[arg(long, default_value = "seed/out/credentials.json")]
    credentials: PathBuf,
}

const AGGREGATORS: [(&str, &str); 2] = [
    ("SunPeak Aggregation", "sunpeak"),
    ("VoltShift Energy", "voltshift"),
];
const FEEDERS: usize = 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // reqwest is built without a crypto provider of its own; use the one in the build.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let admin = Api::login(&cli.api, &cli.client_id, &cli.client_secret).await?;
    let mut credentials = api::Credentials::load(&cli.credentials)?;

    let programs = seed_programs(&admin).await?;
    let mut first = None;
    for (name, slug) in AGGREGATORS {
        let org = admin.organization(name, "aggregator").await?;
        let client = credentials.client_for(&admin, &org, slug).await?;
        let participant = Api::login(&cli.api, &client.client_id, &client.client_secret).await?;
        let gateways = seed_gateways(&participant, cli.gateways_per_aggregator, slug).await?;
        let ders = seed_ders(&participant, &gateways, cli.ders_per_aggregator, slug).await?;
        seed_enrollments(&participant, &programs.0, &ders, slug).await?;
        // Every other DER also in the running program, so events can be scheduled.
        let half: Vec<Value> = ders.iter().step_by(2).cloned().collect();
        seed_enrollments(&participant, &programs.1, &half, slug).await?;
        if first.is_none() {
            first = Some((org, participant, ders));
        }
    }
    credentials.save(&cli.credentials)?;
    if let Some((org, participant, ders)) = &first {
        seed_files(&admin, participant, org, &programs.1, ders).await?;
    }
    seed_event(&admin, &programs.1).await?;
    eprintln!(
        "seed: done; aggregator credentials in {}",
        cli.credentials.display()
    );
    Ok(())
}

/// Files, the other way in: the first aggregator uploads an enrollments CSV putting
/// twenty DERs the REST seeding left out into the running program (once), and the
/// utility uploads yesterday's 15-minute meter data for ten of them (importing it
/// again adds nothing).
async fn seed_files(
    admin: &Api,
    participant: &Api,
    org: &Value,
    running: &str,
    ders: &[Value],
) -> anyhow::Result<()> {
    let org_id = org["id"].as_str().unwrap_or_default();
    // `seed_enrollments` put every other DER in the running program; these are the others.
    let left_out: Vec<&Value> = ders
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|d| matches!(d["der_type"].as_str(), Some("battery" | "thermostat")))
        .take(20)
        .collect();
    // A seed without DERs (the benchmarks provision their own fleet) sends no files.
    if left_out.is_empty() {
        return Ok(());
    }
    let enrolled: HashSet<String> = admin
        .all(&format!("/v1/enrollments?program_id={running}"))
        .await?
        .iter()
        .filter_map(|e| e["der_id"].as_str().map(str::to_owned))
        .collect();
    if left_out
        .iter()
        .any(|d| d["id"].as_str().is_some_and(|id| enrolled.contains(id)))
    {
        eprintln!("seed: the enrollments file was imported before");
    } else {
        let mut csv = String::from("der_external_id,program_id,committed_kw\n");
        for der in &left_out {
            let kw = der["nameplate_kw"].as_f64().unwrap_or(1.0) * 0.5;
            csv += &format!(
                "{},{running},{kw:.1}\n",
                der["external_id"].as_str().unwrap_or_default()
            );
        }
        let file = participant
            .upload_file("enrollments", "more-enrollments.csv", None, csv)
            .await?;
        eprintln!(
            "seed: enrollments file imported ({} enrollment requests)",
            file["rows_imported"]
        );
    }
    let zone = chrono_tz::America::Los_Angeles;
    let yesterday = chrono::Utc::now().with_timezone(&zone).date_naive() - chrono::Days::new(1);
    let midnight = yesterday
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(zone).earliest())
        .ok_or_else(|| anyhow::anyhow!("no local midnight yesterday"))?;
    let mut csv = String::from("der_external_id,interval_start,interval_minutes,kwh\n");
    for der in left_out.iter().take(10) {
        let ext = der["external_id"].as_str().unwrap_or_default();
        for q in 0..96u32 {
            let start = midnight + chrono::TimeDelta::minutes(15 * i64::from(q));
            let hour = f64::from(q) / 4.0;
            // An evening-peaked household load, in kWh per quarter hour.
            let kwh = 0.15 + 0.25 * (-(hour - 18.5).powi(2) / 8.0).exp();
            csv += &format!("{ext},{},15,{kwh:.3}\n", start.to_rfc3339());
        }
    }
    let file = admin
        .upload_file("meter_data", "mdm-yesterday.csv", Some(org_id), csv)
        .await?;
    eprintln!(
        "seed: meter-data file imported ({} rows read, {} new)",
        file["rows_read"], file["rows_imported"]
    );
    Ok(())
}

/// One upcoming event in the running program (tomorrow 17:00–19:00 in the
/// program's time zone, 500 kW), once the worker has activated some enrollments.
async fn seed_event(admin: &Api, program: &str) -> anyhow::Result<()> {
    let events = admin
        .all(&format!("/v1/dispatch-events?program_id={program}"))
        .await?;
    if events.iter().any(|e| e["status"] == "scheduled") {
        eprintln!("seed: an upcoming event exists");
        return Ok(());
    }
    if admin
        .all(&format!("/v1/enrollments?program_id={program}"))
        .await?
        .is_empty()
    {
        eprintln!("seed: no enrollments in the running program; no event scheduled");
        return Ok(());
    }
    let started = std::time::Instant::now();
    loop {
        let active = admin
            .all(&format!(
                "/v1/enrollments?program_id={program}&status=active"
            ))
            .await?
            .len();
        if active > 0 {
            eprintln!("seed: {active} active enrollments in the running program");
            break;
        }
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no enrollment in the running program became active within 2 minutes; is the worker running?"
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let zone = chrono_tz::America::Los_Angeles;
    let tomorrow = chrono::Utc::now().with_timezone(&zone).date_naive() + chrono::Days::new(1);
    let at = |hour: u32| {
        tomorrow
            .and_hms_opt(hour, 0, 0)
            .and_then(|t| t.and_local_timezone(zone).earliest())
            .map(|t| t.with_timezone(&chrono::Utc))
            .ok_or_else(|| anyhow::anyhow!("no local {hour}:00 tomorrow"))
    };
    let event = admin
        .post(
            "/v1/dispatch-events",
            &json!({"program_id": program, "starts_at": at(17)?, "ends_at": at(19)?,
                    "target_kw": 500.0, "signal": "curtail_kw", "signal_value": 500.0}),
        )
        .await?;
    eprintln!(
        "seed: event {} scheduled for tomorrow 17:00-19:00 (America/Los_Angeles)",
        event["id"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// Three programs; the first open and taking enrollments, the second active, the third a draft.
async fn seed_programs(admin: &Api) -> anyhow::Result<(String, String, String)> {
    // (name, kind, status, minutes of notice): the running program takes events at
    // two minutes' notice, so a newcomer can watch one run.
    let specs = [
        ("Summer Peak Demand Response", "demand_response", "open", 60),
        ("Winter Capacity 2027", "capacity", "active", 2),
        ("Feeder Flexibility Pilot", "flexibility", "draft", 60),
    ];
    let existing = admin.all("/v1/programs").await?;
    let mut ids = Vec::new();
    for (name, kind, status, notice) in specs {
        let id = match existing.iter().find(|p| p["name"] == name) {
            Some(p) => p["id"].as_str().unwrap_or_default().to_owned(),
            None => {
                let body = json!({
                    "name": name, "kind": kind, "description": "Seeded for the demo",
                    "time_zone": "America/Los_Angeles", "target_capacity_kw": 2000.0,
                    "capacity_rate_cents_kw_month": 850, "energy_rate_cents_kwh": 25,
                    "baseline_method": "x_of_y_10_10",
                    "eligibility": {"der_types": ["battery", "thermostat", "ev_charger", "water_heater"], "min_nameplate_kw": 1.0, "feeders": []},
                    "limits": {"max_events_per_season": 20, "max_event_duration_minutes": 240, "min_notice_minutes": notice}
                });
                let created = admin.post("/v1/programs", &body).await?;
                let id = created["id"].as_str().unwrap_or_default().to_owned();
                let steps: &[&str] = match status {
                    "open" => &["open"],
                    "active" => &["open", "activate"],
                    _ => &[],
                };
                for step in steps {
                    admin
                        .post(&format!("/v1/programs/{id}/{step}"), &json!({}))
                        .await?;
                }
                id
            }
        };
        ids.push(id);
    }
    eprintln!("seed: 3 programs");
    Ok((ids[0].clone(), ids[1].clone(), ids[2].clone()))
}

async fn seed_gateways(api: &Api, wanted: usize, slug: &str) -> anyhow::Result<Vec<String>> {
    let mut gateways: Vec<String> = api
        .all("/v1/gateways")
        .await?
        .iter()
        .filter_map(|g| g["id"].as_str().map(str::to_owned))
        .collect();
    while gateways.len() < wanted {
        let n = gateways.len() + 1;
        let created = api
            .post(
                "/v1/gateways",
                &json!({"name": format!("{slug}-gw-{n:03}"), "firmware": "2.4.1"}),
            )
            .await?;
        gateways.push(created["id"].as_str().unwrap_or_default().to_owned());
        if n.is_multiple_of(10) || n == wanted {
            eprintln!("seed: {slug}: gateways {n}/{wanted}");
        }
    }
    Ok(gateways)
}

async fn seed_ders(
    api: &Api,
    gateways: &[String],
    wanted: usize,
    slug: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut ders = api.all("/v1/ders").await?;
    let have: HashSet<String> = ders
        .iter()
        .filter_map(|d| d["external_id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<Value> = (0..wanted)
        .filter(|i| !have.contains(&format!("{slug}-{i:05}")))
        .map(|i| {
            let der_type = DER_TYPES[i % DER_TYPES.len()];
            let (kw, kwh) = match der_type {
                "battery" => (5.0, Some(13.5)),
                "ev_charger" => (7.2, None),
                "solar_pv" => (6.5, None),
                "ci_load" => (150.0, None),
                "water_heater" => (4.5, None),
                _ => (3.0, None),
            };
            let feeder = i % FEEDERS;
            json!({
                "external_id": format!("{slug}-{i:05}"),
                "der_type": der_type,
                "nameplate_kw": kw,
                "nameplate_kwh": kwh,
                "location": {
                    "latitude": 37.6 + (i % 97) as f64 * 0.003,
                    "longitude": -122.5 + (i % 89) as f64 * 0.004,
                    "feeder": format!("F-{feeder:02}"),
                    "substation": format!("S-{}", feeder / 5),
                },
                "gateway_id": gateways.get(i % gateways.len().max(1)),
            })
        })
        .collect();
    let mut done = wanted - missing.len();
    for chunk in missing.chunks(250) {
        let created = api.post("/v1/ders/bulk", &json!({"items": chunk})).await?;
        ders.extend(created["items"].as_array().cloned().unwrap_or_default());
        done += chunk.len();
        eprintln!("seed: {slug}: DERs {done}/{wanted}");
    }
    Ok(ders)
}

/// Enrolls the eligible DERs (not solar, not C&I) in a program; the worker decides.
async fn seed_enrollments(
    api: &Api,
    program: &str,
    ders: &[Value],
    slug: &str,
) -> anyhow::Result<()> {
    let enrolled: HashSet<String> = api
        .all(&format!("/v1/enrollments?program_id={program}"))
        .await?
        .iter()
        .filter_map(|e| e["der_id"].as_str().map(str::to_owned))
        .collect();
    let mut count: u32 = 0;
    for der in ders {
        let (Some(id), Some(kw)) = (der["id"].as_str(), der["nameplate_kw"].as_f64()) else {
            continue;
        };
        if enrolled.contains(id) || matches!(der["der_type"].as_str(), Some("solar_pv" | "ci_load"))
        {
            continue;
        }
        api.post("/v1/enrollments", &json!({"program_id": program, "der_id": id, "committed_kw": (kw * 0.8 * 10.0).round() / 10.0}))
            .await?;
        count += 1;
        if count.is_multiple_of(100) {
            eprintln!("seed: {slug}: enrollments requested {count}");
        }
    }
    eprintln!("seed: {slug}: {count} new enrollment requests");
    Ok(())
}
