//! A progress watchdog for consumer groups.
//!
//! After a broker stalls for longer than the session timeout (load, a disk stall, a
//! paused process), a member can lose its assignment and never get it back: tansu 0.6
//! was seen to leave such a group without partitions for good while a new group on
//! the same broker consumed normally (issue 15). librdkafka keeps reporting nothing
//! wrong. So each consumer asks the broker, every few seconds, how far its group's
//! committed offsets are behind the log: when they are behind and have not moved for
//! `stall_after`, the group is stuck, and the consumer rebuilds its client (a new
//! member, fresh fetch state) from its last committed offsets. The verdict also feeds
//! the `pmcore_consumer_*` metrics and `/readyz`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    util::Timeout,
};

use crate::{KafkaConfig, KafkaContext};

/// How each consumer group of a process is doing, for `/readyz`. Cloned into every
/// consumer of the process (it travels in [`crate::KafkaConfig`]).
#[derive(Debug, Clone, Default)]
pub struct ConsumerHealth(Arc<Mutex<HashMap<String, GroupState>>>);

#[derive(Debug, Clone, Copy, Default)]
struct GroupState {
    lag: i64,
    stalled: bool,
}

impl ConsumerHealth {
    fn set(&self, group: &str, lag: i64, stalled: bool) {
        let mut groups = self.0.lock().unwrap_or_else(|p| p.into_inner());
        groups.insert(group.to_owned(), GroupState { lag, stalled });
    }

    /// Groups that lag and have made no progress for their stall time.
    pub fn stalled(&self) -> Vec<(String, i64)> {
        let groups = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut stalled: Vec<(String, i64)> = groups
            .iter()
            .filter(|(_, s)| s.stalled)
            .map(|(g, s)| (g.clone(), s.lag))
            .collect();
        stalled.sort();
        stalled
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Caught up, or moving.
    Healthy,
    /// Behind by `lag` records with no progress for `since`.
    Stalled { lag: i64, since: Duration },
    /// The broker did not answer this check (for less than the stall time).
    Unknown,
}

/// Group offsets as the broker sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    lag: i64,
    committed: i64,
}

/// One consumer's watchdog. It asks through a client of its own that never joins the
/// group: the same queries through the member's handle, while the broker was away,
/// kept the member from rejoining after the broker came back (seen on tansu).
pub struct Watchdog {
    config: KafkaConfig,
    client: Option<Arc<BaseConsumer<KafkaContext>>>,
    /// The physical group id asked about (a generation, see [`crate::home`]).
    group: String,
    /// The group's base id: what metrics and readiness name, whatever the generation.
    label: String,
    topics: Vec<String>,
    /// The topics' partitions and when they were learnt (a metadata request per
    /// topic, so not on every check).
    partitions: Option<(TopicPartitionList, Instant)>,
    stall_after: Duration,
    health: ConsumerHealth,
    last: Option<Position>,
    moved_at: Instant,
    checked_at: Instant,
    /// Records were handled since the last check: the lag gauge is stale, so the
    /// next check comes at the prompt interval even if the group was caught up.
    active: bool,
    /// Since when no check got an answer.
    unanswered_since: Option<Instant>,
}

/// How often the broker is asked while the group lags or the last check got no
/// answer: a stall is measured from there.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How often the broker is asked while the group is caught up and handled nothing
/// since the last check, which is most of the time and all of an idle system's. A group that stops while caught up is still
/// found `stall_after` after its last check without lag: records that arrive in
/// between are seen by the next check, and from then on it is every [`CHECK_EVERY`].
pub const CHECK_CAUGHT_UP_EVERY: Duration = Duration::from_secs(30);

/// How long the partition list of the topics is trusted before it is asked again.
const PARTITIONS_FOR: Duration = Duration::from_secs(300);

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("group", &self.group)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    pub fn new(
        config: &KafkaConfig,
        group: &str,
        physical_topics: &[String],
        stall_after: Duration,
        health: ConsumerHealth,
    ) -> Self {
        Self {
            config: config.clone(),
            client: None,
            group: group.to_owned(),
            label: crate::home::parse(group).0.to_owned(),
            topics: physical_topics.to_vec(),
            partitions: None,
            stall_after,
            health,
            last: None,
            moved_at: Instant::now(),
            checked_at: Instant::now(),
            active: false,
            unanswered_since: None,
        }
    }

    fn interval(&self) -> Duration {
        let caught_up = self.last.is_some_and(|last| last.lag <= 0);
        if caught_up && !self.active && self.unanswered_since.is_none() {
            CHECK_CAUGHT_UP_EVERY
        } else {
            CHECK_EVERY
        }
    }

    /// Whether a check is due (cheap; call it on every loop turn).
    pub fn due(&self) -> bool {
        self.checked_at.elapsed() >= self.interval()
    }

    /// How long until the next check is due.
    pub fn until_due(&self) -> Duration {
        self.interval().saturating_sub(self.checked_at.elapsed())
    }

    /// Tells the watchdog this consumer handled records (no need to wait for the
    /// next commit to know it moves).
    pub fn progressed(&mut self) {
        self.moved_at = Instant::now();
        self.active = true;
    }

    /// Asks the broker for the group's committed offsets and the log ends.
    pub async fn check(&mut self) -> Verdict {
        self.checked_at = Instant::now();
        self.active = false;
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let created: Result<BaseConsumer<KafkaContext>, _> = self
                    .config
                    .client_config()
                    .set("group.id", &self.group)
                    .set("enable.auto.commit", "false")
                    .create_with_context(KafkaContext);
                match created {
                    Ok(c) => self.client.insert(Arc::new(c)).clone(),
                    Err(_) => return Verdict::Unknown,
                }
            }
        };
        let topics = self.topics.clone();
        let known = self
            .partitions
            .as_ref()
            .filter(|(_, at)| at.elapsed() < PARTITIONS_FOR)
            .map(|(list, _)| list.clone());
        let asked = tokio::task::spawn_blocking(move || {
            let partitions = match known {
                Some(list) => list,
                None => crate::home::partitions(&client, &topics, TIMEOUT).ok()?,
            };
            let now = position(&client, &partitions)?;
            Some((now, partitions))
        })
        .await
        .ok()
        .flatten();
        let position = asked.map(|(now, partitions)| {
            if self.partitions.is_none() {
                self.partitions = Some((partitions, Instant::now()));
            }
            now
        });
        let Some(now) = position else {
            self.partitions = None;
            // A client whose connections died may not come back by itself (seen
            // behind a proxy that reset them, issue 10's fault suite): ask through a
            // fresh one next time. And a group whose position cannot be learnt for
            // the stall time is treated as stuck, since the member's own connections
            // are as likely dead: rebuilding costs a rejoin, waiting may cost forever.
            self.client = None;
            let since = *self.unanswered_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.stall_after {
                self.unanswered_since = None;
                return Verdict::Stalled {
                    lag: self.last.map_or(0, |l| l.lag),
                    since: since.elapsed(),
                };
            }
            return Verdict::Unknown;
        };
        self.unanswered_since = None;
        if now.lag <= 0
            || self
                .last
                .is_some_and(|last| last.committed != now.committed)
        {
            self.moved_at = Instant::now();
        }
        self.last = Some(now);
        let since = self.moved_at.elapsed();
        let stalled = now.lag > 0 && since >= self.stall_after;
        self.health.set(&self.label, now.lag, stalled);
        metrics::gauge!("pmcore_consumer_group_lag", "group" => self.label.clone())
            .set(now.lag as f64);
        metrics::gauge!("pmcore_consumer_seconds_since_progress", "group" => self.label.clone())
            .set(if now.lag > 0 {
                since.as_secs_f64()
            } else {
                0.0
            });
        if stalled {
            Verdict::Stalled {
                lag: now.lag,
                since,
            }
        } else {
            Verdict::Healthy
        }
    }

    /// Marks the group as being rebuilt (not stalled until the next check says so).
    pub fn rebuilt(&mut self) {
        metrics::counter!("pmcore_consumer_rebuilds_total", "group" => self.label.clone())
            .increment(1);
        self.moved_at = Instant::now();
        self.health
            .set(&self.label, self.last.map_or(0, |l| l.lag), false);
    }

    /// Moves the group to its next generation (see [`crate::home`]); the consumer
    /// rebuilt after this joins it.
    pub async fn move_group(&self) -> anyhow::Result<String> {
        crate::home::move_on(&self.config, &self.group, &self.topics).await
    }
}

const TIMEOUT: Timeout = Timeout::After(Duration::from_secs(3));

/// Lag (log end minus committed offset, summed over `partitions`) and the sum of
/// committed offsets; None when the broker does not answer in time. Two requests
/// whatever the number of partitions: the group's offsets, and one ListOffsets for
/// every partition's end (timestamp -1 is "latest"), where asking each partition's
/// watermarks took two requests per partition.
fn position(
    consumer: &BaseConsumer<KafkaContext>,
    partitions: &TopicPartitionList,
) -> Option<Position> {
    let committed = consumer
        .committed_offsets(partitions.clone(), TIMEOUT)
        .ok()?;
    let mut ends = partitions.clone();
    ends.set_all_offsets(Offset::End).ok()?;
    let ends = consumer.offsets_for_times(ends, TIMEOUT).ok()?;
    // Partitions without a committed offset are read from their beginning.
    let mut starts = TopicPartitionList::new();
    for element in committed.elements() {
        if !matches!(element.offset(), Offset::Offset(_)) {
            starts
                .add_partition_offset(element.topic(), element.partition(), Offset::Beginning)
                .ok()?;
        }
    }
    let starts = if starts.count() > 0 {
        consumer.offsets_for_times(starts, TIMEOUT).ok()?
    } else {
        starts
    };
    let offset_in = |list: &TopicPartitionList, topic: &str, partition: i32| match list
        .find_partition(topic, partition)?
        .offset()
    {
        Offset::Offset(n) => Some(n),
        _ => None,
    };
    let mut position = Position {
        lag: 0,
        committed: 0,
    };
    for element in committed.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let high = offset_in(&ends, topic, partition)?;
        let at = match element.offset() {
            Offset::Offset(n) => n,
            _ => offset_in(&starts, topic, partition)?,
        };
        position.lag += (high - at).max(0);
        position.committed += at;
    }
    Some(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_up_group_is_asked_less_often_than_one_that_lags_or_went_unanswered() {
        let config = KafkaConfig::new("127.0.0.1:1", "");
        let mut watchdog = Watchdog::new(
            &config,
            "g",
            &[],
            Duration::from_secs(60),
            ConsumerHealth::default(),
        );
        assert_eq!(watchdog.interval(), CHECK_EVERY, "nothing known yet");
        watchdog.last = Some(Position {
            lag: 0,
            committed: 7,
        });
        assert_eq!(watchdog.interval(), CHECK_CAUGHT_UP_EVERY);
        assert!(!watchdog.due());
        assert!(watchdog.until_due() > CHECK_EVERY);
        watchdog.progressed();
        assert_eq!(
            watchdog.interval(),
            CHECK_EVERY,
            "records were handled since: the lag gauge is stale"
        );
        watchdog.active = false;
        watchdog.unanswered_since = Some(Instant::now());
        assert_eq!(watchdog.interval(), CHECK_EVERY, "the broker went quiet");
        watchdog.unanswered_since = None;
        watchdog.last = Some(Position {
            lag: 3,
            committed: 7,
        });
        assert_eq!(watchdog.interval(), CHECK_EVERY, "it lags");
    }
}
