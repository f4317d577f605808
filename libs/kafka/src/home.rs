//! Where a consumer group lives on the broker, and moving it when the broker will no
//! longer serve it.
//!
//! tansu 0.6 can wedge a group for good: after the broker stalls past the members'
//! session timeout, its coordinator keeps electing the member that was leader before
//! the stall, though that member is gone, so every JoinGroup names a leader that never
//! sends the assignment and SyncGroup answers "rebalance in progress" for ever. A new
//! member of the same group is caught the same way; a new group is served at once
//! (`tools/broker/pause_repro.py` shows all three; docs/decisions/0011). So when the
//! watchdog finds a group stuck, the consumer moves to the group's next *generation*,
//! `<group>.g<n>`, seeded with the stuck group's committed offsets (a plain offset
//! commit, no membership needed), and rejoins there.
//!
//! Where a group lives is kept on the broker itself: the current generation is the
//! highest one that has committed offsets, so a restarted instance, or another
//! instance of the service, finds it without any other store. Instances that find the
//! same stall move to the same next generation, and one that finds it already seeded
//! does not overwrite its offsets. Inbox deduplication and dead-letter topics use the
//! logical group name, so a move changes neither.

use std::time::Duration;

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    util::Timeout,
};

use crate::{KafkaConfig, KafkaContext};

/// The most generations looked for; far more moves than a broker should ever force.
const MAX_GENERATIONS: u32 = 1000;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The physical group id of a generation of `base` (the deployment's group id).
pub fn generation_id(base: &str, generation: u32) -> String {
    if generation == 0 {
        base.to_owned()
    } else {
        format!("{base}.g{generation}")
    }
}

/// The generation a physical group id names, and its base.
pub fn parse(physical: &str) -> (&str, u32) {
    if let Some((base, n)) = physical.rsplit_once(".g")
        && let Ok(n) = n.parse::<u32>()
        && n > 0
    {
        return (base, n);
    }
    (physical, 0)
}

/// The group id to join for the logical group `logical`: its highest generation that
/// has committed offsets, or the base id.
pub async fn current(
    config: &KafkaConfig,
    logical: &str,
    topics: &[String],
) -> anyhow::Result<String> {
    let base = config.group(logical);
    let (config, topics) = (config.clone(), topics.to_vec());
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut found = 0;
        for generation in 1..=MAX_GENERATIONS {
            let id = generation_id(&base, generation);
            if committed(&config, &id, &topics)?.is_empty() {
                break;
            }
            found = generation;
        }
        Ok(generation_id(&base, found))
    })
    .await?
}

/// Moves a stuck group to its next generation, seeded with the offsets `from`
/// committed (unless another instance seeded it already); returns the new id.
pub async fn move_on(
    config: &KafkaConfig,
    from: &str,
    topics: &[String],
) -> anyhow::Result<String> {
    let (base, generation) = parse(from);
    let next = generation_id(base, generation + 1);
    let (config, topics, from, to) = (config.clone(), topics.to_vec(), from.to_owned(), next);
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        if committed(&config, &to, &topics)?.is_empty() {
            let offsets = committed(&config, &from, &topics)?;
            if !offsets.is_empty() {
                let mut list = TopicPartitionList::new();
                for (topic, partition, offset) in &offsets {
                    list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
                }
                client(&config, &to)?.commit(&list, CommitMode::Sync)?;
            }
            metrics::counter!("pmcore_consumer_group_moves_total", "group" => base_of(&to))
                .increment(1);
            tracing::warn!(from = %from, to = %to, partitions = offsets.len(),
                "consumer group stuck on the broker; moved to a new generation with its offsets");
        }
        Ok(to)
    })
    .await?
}

fn base_of(physical: &str) -> String {
    parse(physical).0.to_owned()
}

fn client(config: &KafkaConfig, group: &str) -> anyhow::Result<BaseConsumer<KafkaContext>> {
    Ok(config
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(KafkaContext)?)
}

/// The offsets `group` committed on `topics`' partitions (only those it committed).
fn committed(
    config: &KafkaConfig,
    group: &str,
    topics: &[String],
) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let consumer = client(config, group)?;
    let timeout = Timeout::After(TIMEOUT);
    let list = consumer.committed_offsets(partitions(&consumer, topics, timeout)?, timeout)?;
    Ok(list
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(n) => Some((e.topic().to_owned(), e.partition(), n)),
            _ => None,
        })
        .collect())
}

/// Every partition of `topics`, as the broker's metadata lists them.
pub(crate) fn partitions(
    consumer: &BaseConsumer<KafkaContext>,
    topics: &[String],
    timeout: Timeout,
) -> rdkafka::error::KafkaResult<TopicPartitionList> {
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                partitions.add_partition(t.name(), p.id());
            }
        }
    }
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_name_and_parse_both_ways() {
        assert_eq!(generation_id("p.pmcore-worker", 0), "p.pmcore-worker");
        assert_eq!(generation_id("p.pmcore-worker", 3), "p.pmcore-worker.g3");
        assert_eq!(parse("p.pmcore-worker.g3"), ("p.pmcore-worker", 3));
        assert_eq!(parse("p.pmcore-worker"), ("p.pmcore-worker", 0));
        // A group whose own name ends in something like it is not a generation.
        assert_eq!(parse("pmcore-audit.gateways"), ("pmcore-audit.gateways", 0));
        assert_eq!(parse("x.g0"), ("x.g0", 0));
    }
}
