//! The client context every pmcore Kafka client uses: librdkafka's own logs go to
//! `tracing` at levels an operator can live with.
//!
//! Consumers do not ask librdkafka for statistics: building and parsing that JSON
//! every few seconds in every client was a visible share of an idle service (issue
//! 16), and the watchdog already publishes each group's lag
//! (`pmcore_consumer_group_lag`).

use rdkafka::{
    ClientContext,
    config::RDKafkaLogLevel,
    consumer::ConsumerContext,
    error::KafkaError,
    producer::{DeliveryResult, ProducerContext},
};

use crate::producer::Delivered;

#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaContext;

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
}

impl ConsumerContext for KafkaContext {}

impl ProducerContext for KafkaContext {
    type DeliveryOpaque = Box<tokio::sync::oneshot::Sender<Delivered>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        crate::producer::report(result, *waiting);
    }
}
