//! The platform's producer: librdkafka's, with a future per record, polled by a
//! thread of its own.
//!
//! rust-rdkafka's `FutureProducer` does the same with a thread that polls in
//! rounds of 100 ms, and every round ends in a busy loop: once less than a
//! millisecond is left, the wait rounds down to 0 ms and each poll returns at once
//! until the deadline has passed. An idle api spent 62 % of its samples there
//! (about 1 % of a core per producer, issue 16). Rounds of 2 s cut that twentyfold;
//! delivery reports still wake the thread the moment they arrive, so nothing waits
//! longer. A dropped producer's thread ends within a round, and librdkafka's own
//! teardown (purging what was never sent, failing its futures) runs there.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Message, ToBytes},
    producer::{BaseProducer, BaseRecord, FutureRecord},
};
use tokio::sync::oneshot;

use crate::KafkaContext;

/// How long one poll of the producer's thread waits for a delivery report.
const ROUND: Duration = Duration::from_secs(2);

/// Where the broker put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// The outcome of one record, as librdkafka reports it.
pub type Delivered = Result<Delivery, KafkaError>;

/// A producer; clones share the client. The polling thread stops once the last
/// clone is gone.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

struct Shared {
    client: Arc<BaseProducer<KafkaContext>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    pub fn new(config: &ClientConfig) -> anyhow::Result<Self> {
        let client: Arc<BaseProducer<KafkaContext>> =
            Arc::new(config.create_with_context(KafkaContext)?);
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (client, stop) = (client.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kafka-producer".to_owned())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        client.poll(ROUND);
                    }
                })?;
        }
        Ok(Self {
            shared: Arc::new(Shared { client, stop }),
        })
    }

    /// Queues `record`; the future resolves once the broker has it or librdkafka
    /// gives up. Errs at once when librdkafka cannot queue it (its queue is full,
    /// the record is too large).
    pub fn send_result<K, P>(&self, record: FutureRecord<'_, K, P>) -> Result<Pending, KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (tx, rx) = oneshot::channel();
        self.shared
            .client
            .send(base_record(record, Box::new(tx)))
            .map(|()| Pending { rx })
            .map_err(|(error, _)| error)
    }

    /// Like [`Producer::send_result`], but waits up to `queue_timeout` for room in a
    /// full queue, then for the broker.
    pub async fn send<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
        queue_timeout: Duration,
    ) -> Delivered
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let mut record = base_record(record, Box::new(tx));
        loop {
            match self.shared.client.send(record) {
                Ok(()) => return Pending { rx }.await,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < queue_timeout =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
}

fn base_record<'a, K, P>(
    record: FutureRecord<'a, K, P>,
    opaque: Box<oneshot::Sender<Delivered>>,
) -> BaseRecord<'a, K, P, Box<oneshot::Sender<Delivered>>>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    BaseRecord {
        topic: record.topic,
        partition: record.partition,
        payload: record.payload,
        key: record.key,
        timestamp: record.timestamp,
        headers: record.headers,
        delivery_opaque: opaque,
    }
}

/// A queued record's outcome. A producer torn down before its report resolves it
/// as [`KafkaError::Canceled`].
#[derive(Debug)]
pub struct Pending {
    rx: oneshot::Receiver<Delivered>,
}

impl Future for Pending {
    type Output = Delivered;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Delivered> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(KafkaError::Canceled)))
    }
}

/// The delivery report of one record, handed to the future that waits for it.
pub(crate) fn report(
    result: &rdkafka::producer::DeliveryResult<'_>,
    tx: oneshot::Sender<Delivered>,
) {
    let delivered = match result {
        Ok(message) => Ok(Delivery {
            partition: message.partition(),
            offset: message.offset(),
        }),
        Err((error, _)) => Err(error.clone()),
    };
    // The sender may have stopped waiting (a cancelled request): nothing to tell.
    let _ = tx.send(delivered);
}
