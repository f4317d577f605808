//! Readiness: named checks of what a service depends on, run on every `/readyz`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use pmcore_kafka::KafkaConfig;
use pmcore_storage::S3Config;
use sqlx::PgPool;

type Check = Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

/// A start-up step (migrations, topic creation) that readiness waits for.
#[derive(Debug, Clone, Default)]
pub struct Step(Arc<AtomicBool>);

impl Step {
    pub fn done(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check<F, Fut>(mut self, name: &'static str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || f().boxed())));
        self
    }

    pub fn postgres(self, pool: &PgPool) -> Self {
        let pool = pool.clone();
        self.check("postgres", move || {
            let pool = pool.clone();
            async move { pmcore_db::ping(&pool).await }
        })
    }

    pub fn kafka(self, config: &KafkaConfig) -> Self {
        let config = config.clone();
        self.check("kafka", move || {
            let config = config.clone();
            async move { pmcore_kafka::ping(&config).await }
        })
    }

    /// Fails while a consumer group of this process lags and does not move (its
    /// consumer is being rebuilt by the watchdog).
    pub fn consumers(self, config: &KafkaConfig) -> Self {
        let health = config.health.clone();
        self.check("consumers", move || {
            let stalled = health.stalled();
            async move {
                if stalled.is_empty() {
                    Ok(())
                } else {
                    let groups: Vec<String> = stalled
                        .iter()
                        .map(|(group, lag)| format!("{group} ({lag} behind)"))
                        .collect();
                    anyhow::bail!("stalled: {}", groups.join(", "))
                }
            }
        })
    }

    pub fn s3(self, client: &pmcore_storage::Client, config: &S3Config) -> Self {
        let (client, config) = (client.clone(), config.clone());
        self.check("s3", move || {
            let (client, config) = (client.clone(), config.clone());
            async move { pmcore_storage::ping(&client, &config).await }
        })
    }

    /// Ready only once `step` is done.
    pub fn step(self, name: &'static str, step: &Step) -> Self {
        let step = step.clone();
        self.check(name, move || {
            let done = step.is_done();
            async move {
                if done {
                    Ok(())
                } else {
                    anyhow::bail!("not finished yet")
                }
            }
        })
    }

    /// Runs every check concurrently; returns overall readiness and a per-check report.
    pub async fn evaluate(&self) -> (bool, serde_json::Value) {
        let results = futures::future::join_all(self.checks.iter().map(|(name, check)| {
            let fut = check();
            async move {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("{e:#}")),
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                };
                (*name, outcome)
            }
        }))
        .await;
        let ready = results.iter().all(|(_, r)| r.is_ok());
        let report = results
            .into_iter()
            .map(|(name, r)| {
                let v = match r {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => e,
                };
                (name.to_owned(), serde_json::Value::String(v))
            })
            .collect::<serde_json::Map<_, _>>();
        (ready, serde_json::Value::Object(report))
    }
}
