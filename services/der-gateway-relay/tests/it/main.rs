//! Integration tests of the relay against the real stack: Postgres, the broker and
//! (for the pipeline) the worker.

mod broker_pause;
mod commands;
mod dispatch;
mod helpers;
mod liveness;
mod pipeline;
mod sessions;
mod settlement;
