//! Topic creation. Brokers in production may have topics made by their operators;
//! creating an existing topic is not an error here.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    types::RDKafkaErrorCode,
};

use crate::{KafkaConfig, KafkaContext};

/// Creates the given physical topics unless they exist.
pub async fn ensure(config: &KafkaConfig, names: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<KafkaContext> =
        config.client_config().create_with_context(KafkaContext)?;
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                config.partitions,
                TopicReplication::Fixed(config.replication),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Creates topics, waiting with capped backoff until the broker answers.
pub async fn ensure_when_ready(config: &KafkaConfig, names: &[String]) -> anyhow::Result<()> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times();
    (|| ensure(config, names))
        .retry(backoff)
        .notify(|error, wait| tracing::warn!(%error, ?wait, "topic creation waits for the broker"))
        .await
}

/// Physical names of every catalog topic.
pub fn all(config: &KafkaConfig) -> Vec<String> {
    pmcore_events::catalog::TOPICS
        .iter()
        .map(|t| config.topic(t.name))
        .collect()
}
