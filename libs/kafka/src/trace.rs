//! W3C trace context through Kafka: the producing span's `traceparent` travels in the
//! record headers and the consuming span continues that trace, so one trace follows a
//! request from the api to the worker.

use std::collections::HashMap;

use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of the current span, when traces are being recorded.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span named by `traceparent`.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn trace_id(traceparent: &str) -> &str {
        traceparent.split('-').nth(1).unwrap_or_default()
    }

    #[test]
    fn a_consumer_span_continues_the_producers_trace() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let produced = tracing::info_span!("request").in_scope(current_traceparent);
            let produced = produced.expect("a recorded span has a traceparent");
            assert!(produced.starts_with("00-"), "{produced}");

            let consume = tracing::info_span!("consume");
            continue_trace(&consume, Some(&produced));
            let consumed = consume.in_scope(current_traceparent).expect("traceparent");
            assert_eq!(trace_id(&consumed), trace_id(&produced));
            assert_ne!(
                consumed, produced,
                "the consumer's span is a new span in that trace"
            );
        });
    }

    #[test]
    fn without_a_recorded_span_there_is_no_traceparent() {
        assert_eq!(current_traceparent(), None);
    }
}
