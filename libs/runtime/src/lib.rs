//! What every pmcore service shares around its own logic: the command line
//! (`serve`, `migrate`, `healthcheck`), telemetry, `/healthz` `/readyz` `/metrics`,
//! and shutdown on SIGTERM.

pub mod cli;
pub mod clock;
mod config_file;
pub mod health;
pub mod http;
pub mod platform;
pub mod shutdown;
pub mod telemetry;

pub use cli::{Service, main};
pub use health::{Readiness, Step};
pub use platform::{Platform, supervise, task};

/// Makes aws-lc-rs (already in the build for the S3 client) the process's TLS crypto
/// provider, so every HTTPS client (JWKS, OTLP) uses it and no second crypto library
/// is linked. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
