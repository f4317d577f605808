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

/// Every pmcore process allocates with mimalloc rather than glibc's malloc. glibc
/// raises its mmap threshold each time a large block is freed (up to 32 MB), after
/// which argon2's 19 MB working blocks (one per gateway hello or token check) come
/// from per-thread arenas and stay resident after they are freed: the relay held
/// 441 MB with the 50 demo gateways connected, and 26 MB with the threshold pinned
/// (issue 16, docs/benchmarks.md). mimalloc gives large blocks back to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Makes aws-lc-rs (already in the build for the S3 client) the process's TLS crypto
/// provider, so every HTTPS client (JWKS, OTLP) uses it and no second crypto library
/// is linked. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
