//! Postgres access shared by every service.

mod config;
pub mod inbox;
pub mod lock;
pub mod migrate;
pub mod retention;
pub mod telemetry;

pub use config::DbConfig;
use secrecy::ExposeSecret;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// How long a released connection may take to answer before it is closed.
const RELEASE_PING: std::time::Duration = std::time::Duration::from_secs(5);

/// A pool that connects on first use, so a service can start before Postgres does
/// and become ready once it answers.
pub fn lazy_pool(config: &DbConfig) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config.url.expose_secret().parse()?;
    let options = options.options([("statement_timeout", config.statement_timeout_ms.to_string())]);
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout())
        // sqlx pings every released connection before pooling it, with no time
        // limit; one that went silent mid-query (its caller gone: a request whose
        // client hung up) would hold its slot forever. This bounded ping comes first
        // and closes such a connection instead.
        .after_release(|conn, _| {
            Box::pin(async move {
                match tokio::time::timeout(RELEASE_PING, sqlx::Connection::ping(conn)).await {
                    Ok(answer) => answer.map(|()| true),
                    Err(_) => {
                        metrics::counter!("pmcore_db_unanswered_total").increment(1);
                        Err(NoAnswer(RELEASE_PING).into())
                    }
                }
            })
        })
        .connect_lazy_with(options);
    Ok(pool)
}

/// Readiness: Postgres answers a trivial query.
pub async fn ping(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("select 1").execute(pool).await?;
    Ok(())
}

/// The database did not finish a unit of work in time; its connection was closed.
#[derive(Debug, thiserror::Error)]
#[error("Postgres did not answer within {0:?}; its connection was closed")]
pub struct NoAnswer(pub std::time::Duration);

/// An I/O error, as sqlx reports a connection that broke.
impl From<NoAnswer> for sqlx::Error {
    fn from(error: NoAnswer) -> Self {
        sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, error))
    }
}

/// Runs `work` on a pooled connection of its own and gives up after `limit`.
///
/// sqlx sets no socket timeout, so a connection that goes silent (a firewall that
/// drops its packets, a proxy that stopped forwarding) leaves a query waiting
/// forever. A connection that has not answered in time is detached and dropped,
/// which closes its socket: returned to the pool, sqlx would ping it with no time
/// limit and keep the pool slot. `limit` must exceed the statement timeout, so it
/// only ends waits on a database that does not answer.
pub async fn within<T, E>(
    pool: &PgPool,
    limit: std::time::Duration,
    work: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<sqlx::Error> + From<NoAnswer>,
{
    let mut conn = pool.acquire().await?;
    match tokio::time::timeout(limit, work(&mut conn)).await {
        Ok(result) => result,
        Err(_) => {
            drop(conn.detach());
            tracing::warn!(?limit, "Postgres did not answer; connection closed");
            metrics::counter!("pmcore_db_unanswered_total").increment(1);
            Err(NoAnswer(limit).into())
        }
    }
}

/// `work`, or [`NoAnswer`] once `limit` has passed: for a loop's unit of work on
/// pooled connections, which the pool closes on release if they stay silent.
pub async fn bounded<T, E: From<NoAnswer>>(
    limit: std::time::Duration,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(NoAnswer(limit).into()))
}
