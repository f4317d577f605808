use std::time::Duration;

use rdkafka::ClientConfig;

use crate::watchdog::ConsumerHealth;

#[derive(Debug, Clone, clap::Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma separated.
    #[arg(
        long = "kafka-brokers",
        env = "PMCORE_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// Prefix for every topic name, e.g. `staging.` (tests use a unique one each).
    #[arg(
        long = "kafka-topic-prefix",
        env = "PMCORE_KAFKA_TOPIC_PREFIX",
        default_value = ""
    )]
    pub topic_prefix: String,

    /// Partitions for topics this service creates.
    #[arg(
        long = "kafka-partitions",
        env = "PMCORE_KAFKA_PARTITIONS",
        default_value_t = 3
    )]
    pub partitions: i32,

    /// Replication factor for topics this service creates.
    #[arg(
        long = "kafka-replication",
        env = "PMCORE_KAFKA_REPLICATION",
        default_value_t = 1
    )]
    pub replication: i32,

    /// How long the producer keeps trying to deliver a record, in milliseconds.
    #[arg(
        long = "kafka-message-timeout-ms",
        env = "PMCORE_KAFKA_MESSAGE_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub message_timeout_ms: u64,

    /// Produce with an idempotent producer (`enable.idempotence`). The embedded stack
    /// turns it off: tansu 0.6's SQLite engine panics in its idempotence check under
    /// load and stops serving until restarted (docs/decisions/0010). Without it the
    /// producer keeps one request in flight, so order per partition holds, and a
    /// retried record may arrive twice, which every consumer absorbs.
    #[arg(
        long = "kafka-idempotence",
        env = "PMCORE_KAFKA_IDEMPOTENCE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub idempotence: bool,

    /// How long the group coordinator waits for a consumer's heartbeat before it
    /// hands the consumer's partitions to others, in milliseconds. After a broker
    /// restart tansu still lists the members it had, and a new member waits this long
    /// for their partitions, so it stays short (10 s rather than Kafka's 45 s); a
    /// broker stalled for longer than this is the watchdog's business.
    #[arg(
        long = "kafka-session-timeout-ms",
        env = "PMCORE_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub session_timeout_ms: u64,

    /// A consumer group whose committed offsets lag the log and have not moved for
    /// this many seconds is stuck: its consumer rebuilds its client and `/readyz`
    /// reports it until it moves again. Well above the session timeout plus a
    /// rebalance, so the ordinary recovery after a broker restart is never cut short
    /// (a rebuild adds a member the group must wait for).
    #[arg(
        long = "kafka-stall-after-s",
        env = "PMCORE_KAFKA_STALL_AFTER_S",
        default_value_t = 60
    )]
    pub stall_after_s: u64,

    /// How long the broker may hold a fetch of a prompt consumer (commands, their
    /// acknowledgements, telemetry) waiting for records, in milliseconds. tansu 0.6
    /// answers every fetch after about half of it, records or not, so this sets both
    /// those consumers' latency per hop and how often an idle one asks.
    #[arg(
        long = "kafka-fetch-wait-ms",
        env = "PMCORE_KAFKA_FETCH_WAIT_MS",
        default_value_t = 500
    )]
    pub fetch_wait_ms: u32,

    /// The same for consumers whose records may wait a second (the audit trail,
    /// notifications, eligibility, settlement, imports): fewer fetches at rest, which
    /// is most of what an idle embedded broker does.
    #[arg(
        long = "kafka-background-fetch-wait-ms",
        env = "PMCORE_KAFKA_BACKGROUND_FETCH_WAIT_MS",
        default_value_t = 2000
    )]
    pub background_fetch_wait_ms: u32,

    /// Days a consumer remembers the ids of the events it handled (its inbox), to
    /// drop a record read twice. A record can only come again while it is on its
    /// topic: keep this above the topics' retention (Kafka's default is 7 days).
    #[arg(
        long = "inbox-retention-days",
        env = "PMCORE_INBOX_RETENTION_DAYS",
        default_value_t = 14
    )]
    pub inbox_retention_days: i32,

    /// Longest a consumer or the outbox relay waits for Postgres to finish one unit
    /// of work (a record's or a batch's transaction) before it closes the connection
    /// and tries again on another, in seconds. Above the statement timeout, so it
    /// only ends waits on a database that has gone silent.
    #[arg(
        long = "consumer-database-timeout-s",
        env = "PMCORE_CONSUMER_DATABASE_TIMEOUT_S",
        default_value_t = 90
    )]
    pub database_timeout_s: u64,

    /// How this process's consumers are doing; shared by every clone, read by `/readyz`.
    #[arg(skip)]
    pub health: ConsumerHealth,
}

impl KafkaConfig {
    pub fn new(brokers: &str, topic_prefix: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topic_prefix: topic_prefix.to_owned(),
            partitions: 3,
            replication: 1,
            message_timeout_ms: 30_000,
            idempotence: std::env::var("PMCORE_KAFKA_IDEMPOTENCE").map_or(true, |v| v != "false"),
            session_timeout_ms: 10_000,
            stall_after_s: 60,
            fetch_wait_ms: 500,
            background_fetch_wait_ms: 2000,
            inbox_retention_days: 14,
            database_timeout_s: 90,
            health: ConsumerHealth::default(),
        }
    }

    /// The fetch wait of a consumer of this pace.
    pub fn fetch_wait_ms(&self, pace: crate::consumer::Pace) -> u32 {
        match pace {
            crate::consumer::Pace::Prompt => self.fetch_wait_ms,
            crate::consumer::Pace::Background => self.background_fetch_wait_ms,
        }
    }

    pub fn database_timeout(&self) -> Duration {
        Duration::from_secs(self.database_timeout_s.max(1))
    }

    pub fn stall_after(&self) -> Duration {
        Duration::from_secs(self.stall_after_s.max(1))
    }

    /// The physical name of a logical topic.
    pub fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.topic_prefix)
    }

    /// The consumer group id of a logical group. Prefixed like topics: deployments
    /// (and tests) sharing a broker must not share groups either, or one's members
    /// take part in the other's rebalances.
    pub fn group(&self, logical: &str) -> String {
        format!("{}{logical}", self.topic_prefix)
    }

    /// The dead-letter topic of a topic (physical name) for a consumer group.
    pub fn dead_letter_topic(physical_topic: &str, group: &str) -> String {
        format!("{physical_topic}.dlq.{group}")
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            // librdkafka logs every failed connect; one line per minute is enough.
            .set("log.connection.close", "false")
            .set("reconnect.backoff.max.ms", "2000")
            // No KIP-714 client metrics: nothing here collects them, and a broker that
            // offers an empty subscription (tansu: every 5 s) is asked again and again,
            // one request per client every few seconds (a fifth of an idle embedded
            // broker's requests, issue 16).
            .set("enable.metrics.push", "false");
        c
    }
}
