//! One command line for every service: `serve` (the default), `migrate`, `healthcheck`.

use std::{net::SocketAddr, process::ExitCode};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use pmcore_db::DbConfig;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{self, TelemetryConfig};

/// A pmcore service: build it from configuration, run it until cancelled.
pub trait Service: Sized + Send {
    const NAME: &'static str;
    const ABOUT: &'static str;
    /// The migration sets `migrate` applies: the platform's, and the service's own.
    const MIGRATIONS: &'static [pmcore_db::migrate::Set] = &[pmcore_db::migrate::Set::Platform];
    type Config: Args + Clone + Send + Sync + 'static;

    fn database(config: &Self::Config) -> &DbConfig;
    fn listen_addr(config: &Self::Config) -> SocketAddr;
    /// Where `/readyz` answers (`healthcheck` asks there): the service's own port unless
    /// it keeps the operational endpoints apart.
    fn ops_addr(config: &Self::Config) -> SocketAddr {
        Self::listen_addr(config)
    }

    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send;
    fn run(self, cancel: CancellationToken) -> impl Future<Output = anyhow::Result<()>> + Send;
}

#[derive(Debug, Parser)]
struct Cli<C: Args> {
    /// TOML file of settings (keys: the PMCORE_* names in lower case, without PMCORE_).
    /// Flags and environment variables take precedence over it.
    #[arg(long = "config", env = "PMCORE_CONFIG", global = true)]
    config_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    config: C,
    #[command(flatten)]
    telemetry: TelemetryConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply pending database migrations (flyway/pm/, and the service's own) and exit.
    Migrate,
    /// Exit 0 when the running service answers /readyz with 200 (for container health checks).
    Healthcheck,
}

/// The whole of a service's `main`.
pub fn main<S: Service>() -> ExitCode {
    crate::install_crypto_provider();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = Cli::<S::Config>::command()
        .name(S::NAME)
        .about(S::ABOUT)
        .version(env!("CARGO_PKG_VERSION"));
    if let Some(path) = crate::config_file::path_from(&args) {
        command = match crate::config_file::apply(command, &path) {
            Ok(command) => command,
            Err(e) => {
                eprintln!("{}: {e:#}", S::NAME);
                return ExitCode::from(2);
            }
        };
    }
    let cli = match Cli::<S::Config>::from_arg_matches(&command.get_matches_from(args)) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", S::NAME);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch::<S>(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{} failed", S::NAME);
            eprintln!("{}: {e:#}", S::NAME);
            ExitCode::FAILURE
        }
    }
}

async fn dispatch<S: Service>(cli: Cli<S::Config>) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let _guard = telemetry::init(S::NAME, &cli.telemetry)?;
            let cancel = crate::shutdown::on_signal()?;
            if S::database(&cli.config).migrate_on_start {
                let applied =
                    pmcore_db::migrate::run_when_ready(S::database(&cli.config), S::MIGRATIONS)
                        .await?;
                tracing::info!(?applied, "migrations applied");
            }
            tracing::info!(listen = %S::listen_addr(&cli.config), "{} starting", S::NAME);
            S::build(cli.config).await?.run(cancel).await?;
            tracing::info!("{} stopped", S::NAME);
            Ok(())
        }
        Command::Migrate => {
            let _guard = telemetry::init(S::NAME, &cli.telemetry)?;
            let applied =
                pmcore_db::migrate::run_sets(S::database(&cli.config), S::MIGRATIONS).await?;
            tracing::info!(?applied, "migrations applied");
            Ok(())
        }
        Command::Healthcheck => {
            let mut addr = S::ops_addr(&cli.config);
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let url = format!("http://{addr}/readyz");
            let response = reqwest::get(&url).await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{url} answered {}",
                response.status()
            );
            Ok(())
        }
    }
}
