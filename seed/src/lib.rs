//! Local data for pmcore: the REST seed (`seed`) and the gateway simulator
//! (`gateway-sim`), which streams live telemetry through the relay and backfills
//! history the same way, and `seed-kafka`, which publishes the current state as events.

pub mod api;
pub mod backfill;
pub mod fleet;
pub mod profiles;
pub mod sim;
pub mod state;
