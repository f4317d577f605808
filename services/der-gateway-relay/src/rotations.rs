//! A rotated secret ends the sessions opened with the old one.
//!
//! Every relay instance must see every rotation, so this reader is in no consumer
//! group: it assigns itself every partition of `pm.gateways.v1` from the end and
//! commits nothing. The notice only ends sessions early: whether or not it arrives,
//! a session checks its secret against Postgres before it delivers a command or
//! accepts an acknowledgement, and after this reader restarts (it may have missed
//! notices) every session checks once.

use std::{sync::Arc, time::Duration};

use pmcore_events::{catalog, domain::GatewaySecretRotated};
use pmcore_kafka::KafkaContext;
use pmcore_runtime::Step;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    util::Timeout,
};

use crate::hub::{Control, Hub};

pub async fn watch(hub: Arc<Hub>, ready: Step) {
    while !hub.cancel.is_cancelled() {
        if let Err(error) = run_once(&hub, &ready).await {
            tracing::warn!(error = %format!("{error:#}"), "rotation reader failed; restarting");
            tokio::select! {
                () = hub.cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }
}

async fn run_once(hub: &Hub, ready: &Step) -> anyhow::Result<()> {
    let topic = hub.kafka.topic(catalog::GATEWAYS.name);
    let consumer: StreamConsumer<KafkaContext> = hub
        .kafka
        .client_config()
        // Required by librdkafka, but with `assign` no group is joined.
        .set("group.id", hub.kafka.group("pmcore-relay-rotations"))
        .set("enable.auto.commit", "false")
        // A rotation only ends sessions early (see above): it can wait a second.
        .set(
            "fetch.wait.max.ms",
            hub.kafka
                .fetch_wait_ms(pmcore_kafka::consumer::Pace::Background)
                .to_string(),
        )
        .create_with_context(KafkaContext)?;
    tracing::debug!(%topic, "rotation reader starting");
    let probe_config = hub.kafka.client_config();
    let probe_topic = topic.clone();
    // The exact end of each partition, read before `ready`: `Offset::End` would be
    // resolved later, and a rotation published in between would be skipped.
    let ends = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64)>> {
        let probe: BaseConsumer<KafkaContext> = probe_config.create_with_context(KafkaContext)?;
        let timeout = Duration::from_secs(5);
        let metadata = probe.fetch_metadata(Some(&probe_topic), Timeout::After(timeout))?;
        let mut ends = Vec::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = probe.fetch_watermarks(&probe_topic, partition.id(), timeout)?;
            ends.push((partition.id(), high));
        }
        Ok(ends)
    })
    .await??;
    anyhow::ensure!(!ends.is_empty(), "{topic} has no partitions yet");
    let mut assignment = TopicPartitionList::new();
    for (partition, high) in ends {
        assignment.add_partition_offset(&topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    ready.done();
    // Rotations published while this reader was away were not seen: every session
    // checks its secret against Postgres once.
    hub.control_all(Control::CheckSecret);
    tracing::debug!(%topic, "rotation reader assigned");
    loop {
        let message = tokio::select! {
            () = hub.cancel.cancelled() => return Ok(()),
            m = consumer.recv() => m?,
        };
        let Ok(decoded) = pmcore_events::avro::decode(message.payload().unwrap_or_default(), None)
        else {
            continue;
        };
        if decoded.event_type.ce_type != catalog::GATEWAY_SECRET_ROTATED.ce_type {
            continue;
        }
        if let Ok(rotated) = decoded.into_typed::<GatewaySecretRotated>()
            && let Ok(gateway_id) = rotated.gateway_id.parse()
        {
            match chrono::DateTime::from_timestamp_micros(rotated.rotated_at) {
                Some(at) => {
                    tracing::info!(%gateway_id, "secret rotated; ending its session here if opened before");
                    hub.secret_rotated(gateway_id, at);
                }
                // Not a time we can compare: let the session ask Postgres.
                None => hub.control(gateway_id, Control::CheckSecret),
            }
        }
    }
}
