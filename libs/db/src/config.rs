use std::time::Duration;

use secrecy::SecretString;

#[derive(Debug, Clone, clap::Args)]
pub struct DbConfig {
    /// Postgres connection URL of this service's role.
    #[arg(
        long = "database-url",
        env = "PMCORE_DATABASE_URL",
        default_value = "postgres://pmcore:pmcore@127.0.0.1:5432/pmcore",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub url: SecretString,

    /// Largest number of pooled connections.
    #[arg(
        long = "database-max-connections",
        env = "PMCORE_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub max_connections: u32,

    /// How long a query waits for a pooled connection before failing, in milliseconds.
    #[arg(
        long = "database-acquire-timeout-ms",
        env = "PMCORE_DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub acquire_timeout_ms: u64,

    /// Longest a statement of this service may run before Postgres cancels it, in
    /// milliseconds (0: no limit). Guards the pool against a query that never ends.
    #[arg(
        long = "database-statement-timeout-ms",
        env = "PMCORE_DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub statement_timeout_ms: u64,

    /// Apply pending migrations at start (waits for Postgres).
    #[arg(
        long = "migrate-on-start",
        env = "PMCORE_MIGRATE_ON_START",
        default_value_t = false
    )]
    pub migrate_on_start: bool,
}

impl DbConfig {
    pub fn from_url(url: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            max_connections: 10,
            acquire_timeout_ms: 5000,
            statement_timeout_ms: 60_000,
            migrate_on_start: false,
        }
    }

    pub(crate) fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}
