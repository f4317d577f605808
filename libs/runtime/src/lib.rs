//! What every pmcore service shares around its own logic: the command line
//! (`serve`, `migrate`, `healthcheck`), telemetry, `/healthz` `/readyz` `/metrics`,
//! and shutdown on SIGTERM.

pub mod cli;
mod config_file;
pub mod health;
pub mod http;
pub mod platform;
pub mod shutdown;
pub mod telemetry;

pub use cli::{Service, main};
pub use health::{Readiness, Step};
pub use platform::{Platform, supervise};
