//! `seed`: the organizations and programs of the demo, written the way the api writes
//! them (row and event in one transaction), so the audit log records them too.
//! Running it again changes nothing.

use clap::Parser;
use pmcore_db::DbConfig;
use pmcore_events::domain::ProgramCreated;
use pmcore_kafka::outbox::{self, EventMeta};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(name = "seed", about = "Seed a development database (idempotent)")]
struct Cli {
    #[command(flatten)]
    database: DbConfig,
}

const UTILITY: &str = "Northwind Electric";
const AGGREGATORS: [&str; 2] = ["SunPeak Aggregation", "VoltShift Energy"];
const PROGRAMS: [(&str, &str); 3] = [
    ("Summer Peak Demand Response", "demand_response"),
    ("Winter Capacity 2027", "capacity"),
    ("Feeder Flexibility Pilot", "flexibility"),
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pool = pmcore_db::lazy_pool(&cli.database)?;
    pmcore_db::migrate::run(&cli.database).await?;
    let mut tx = pool.begin().await?;
    let utility = organization(&mut tx, UTILITY, "utility").await?;
    for name in AGGREGATORS {
        organization(&mut tx, name, "aggregator").await?;
    }
    let mut created = 0;
    for (name, kind) in PROGRAMS {
        created += u32::from(program(&mut tx, utility, name, kind).await?);
    }
    tx.commit().await?;
    report(&pool, created).await
}

async fn organization(conn: &mut PgConnection, name: &str, kind: &str) -> anyhow::Result<Uuid> {
    let id: Uuid = sqlx::query_scalar(
        "insert into pm.organization (id, name, kind) values ($1, $2, $3)
         on conflict on constraint organization_name_key do update set name = excluded.name
         returning id",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(kind)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// Creates the program with its event unless one of that name exists; true if created.
async fn program(
    conn: &mut PgConnection,
    organization_id: Uuid,
    name: &str,
    kind: &str,
) -> anyhow::Result<bool> {
    let exists: bool = sqlx::query_scalar(
        "select exists (select 1 from pm.program where organization_id = $1 and name = $2)",
    )
    .bind(organization_id)
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    if exists {
        return Ok(false);
    }
    let id = Uuid::now_v7();
    sqlx::query("insert into pm.program (id, organization_id, name, kind) values ($1, $2, $3, $4)")
        .bind(id)
        .bind(organization_id)
        .bind(name)
        .bind(kind)
        .execute(&mut *conn)
        .await?;
    let event = ProgramCreated {
        program_id: id.to_string(),
        organization_id: organization_id.to_string(),
        name: name.to_owned(),
        kind: kind.to_owned(),
        status: "draft".to_owned(),
        created_at: chrono::Utc::now().timestamp_micros(),
    };
    let meta = EventMeta {
        source: "seed".to_owned(),
        principal: Some("service:seed".to_owned()),
        traceparent: None,
    };
    outbox::enqueue(conn, &event, &meta).await?;
    Ok(true)
}

async fn report(pool: &PgPool, created: u32) -> anyhow::Result<()> {
    let (orgs, programs): (i64, i64) = sqlx::query_as(
        "select (select count(*) from pm.organization), (select count(*) from pm.program)",
    )
    .fetch_one(pool)
    .await?;
    eprintln!("seed: {orgs} organizations, {programs} programs ({created} programs new this run)");
    Ok(())
}
