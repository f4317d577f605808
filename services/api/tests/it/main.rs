//! The REST API against the real stack: every endpoint's success path and each
//! failure it handles.

mod audit;
mod auth;
mod ders;
mod dispatch;
mod enrollments;
mod errors;
mod files;
mod gateways;
mod helpers;
mod messaging;
mod oidc;
mod openapi;
mod organizations;
mod programs;
mod settlements;
mod telemetry;
