//! Backbone integration tests on the real stack: Postgres, a Kafka-protocol broker
//! and the services' own code, over the network.

mod broker_pause;
mod dead_letters;
mod hardening;
mod helpers;
mod late_dependencies;
mod outage;
mod outbox_and_inbox;
mod privileges;
mod scheduler;
mod services;
mod storage;
