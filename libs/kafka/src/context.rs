//! The client context every pmcore Kafka client uses: librdkafka's own logs go to
//! `tracing` at levels an operator can live with, and consumer statistics become the
//! `pmcore_consumer_lag` gauge.

use rdkafka::{
    ClientContext, Statistics, config::RDKafkaLogLevel, consumer::ConsumerContext,
    error::KafkaError,
};

#[derive(Debug, Clone, Default)]
pub struct KafkaContext {
    /// Set for consumers: labels the lag gauge.
    group: Option<String>,
}

impl KafkaContext {
    pub fn consumer(group: &str) -> Self {
        Self {
            group: Some(group.to_owned()),
        }
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // librdkafka reports every refused connection as an error. While a broker is
        // away that is expected and `/readyz` already says so: warn, do not shout.
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::debug!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::trace!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }

    fn stats(&self, statistics: Statistics) {
        let Some(group) = &self.group else { return };
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                // librdkafka uses partition -1 for internal bookkeeping and lag -1 for unknown.
                if partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    "pmcore_consumer_lag",
                    "group" => group.clone(),
                    "topic" => topic.clone(),
                    "partition" => partition.to_string(),
                )
                .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for KafkaContext {}
