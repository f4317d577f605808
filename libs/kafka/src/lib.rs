//! Kafka plumbing shared by the services.
//!
//! - [`outbox`]: state changes and their events commit together; a relay publishes them.
//! - [`producer`]: the producer every service uses, a future per record.
//! - [`consumer`]: at-least-once consumption with inbox dedup, retries and dead letters.
//! - [`topics`]: creates the catalog's topics (with the deployment's prefix).
//! - [`watchdog`]: finds a consumer group that lags and no longer moves.
//! - [`home`]: the generation of a group a consumer joins, and moving a stuck one.

mod config;
pub mod consumer;
mod context;
pub mod home;
pub mod outbox;
pub mod producer;
pub mod topics;
pub mod trace;
pub mod watchdog;

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
pub use config::KafkaConfig;
pub use context::KafkaContext;
pub use producer::Producer;
use rdkafka::ClientConfig;

/// The platform's producer: `acks=all` and idempotent (`enable.idempotence=true`:
/// retries cannot duplicate or reorder records within a partition), unless the
/// deployment turns idempotence off (`KafkaConfig::idempotence`), when one request in
/// flight keeps the order and consumers absorb a retried duplicate.
pub fn idempotent_producer(config: &KafkaConfig) -> anyhow::Result<Producer> {
    Producer::new(&idempotent_producer_config(config))
}

/// The settings of [`idempotent_producer`], for a producer that needs a few more.
pub fn idempotent_producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = config.client_config();
    c.set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", config.message_timeout_ms.to_string());
    if config.idempotence {
        c.set("enable.idempotence", "true");
    } else {
        c.set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1");
    }
    c
}

/// Kafka record headers from name/value pairs (CloudEvents attributes and the like).
pub fn record_headers<K: AsRef<str>, V: AsRef<str>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> rdkafka::message::OwnedHeaders {
    pairs
        .into_iter()
        .fold(rdkafka::message::OwnedHeaders::new(), |h, (k, v)| {
            h.insert(rdkafka::message::Header {
                key: k.as_ref(),
                value: Some(v.as_ref().as_bytes()),
            })
        })
}

/// Readiness: the broker answers a metadata request.
pub async fn ping(config: &KafkaConfig) -> anyhow::Result<()> {
    let client_config: ClientConfig = config.client_config();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use rdkafka::{
            consumer::{BaseConsumer, Consumer},
            util::Timeout,
        };
        let probe: BaseConsumer<KafkaContext> = client_config.create_with_context(KafkaContext)?;
        probe.fetch_metadata(None, Timeout::After(std::time::Duration::from_secs(2)))?;
        Ok(())
    })
    .await?
}

pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Capped exponential backoff with jitter for loops that must never give up.
pub(crate) fn retry_policy() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build()
}
