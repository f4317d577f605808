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

/// How long one evaluation answers every `/readyz`. A probe (or anyone who can reach
/// the port) asking in a loop then costs one Kafka metadata request and one pooled
/// connection a second, not one per request.
const FRESH_FOR: Duration = Duration::from_secs(1);

type Verdict = (std::time::Instant, bool, serde_json::Value);

#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
    /// The last verdict; concurrent callers wait for the one evaluation under way.
    last: Arc<tokio::sync::Mutex<Option<Verdict>>>,
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
        // Another set of checks: not the verdict of the one it was cloned from.
        self.last = Arc::default();
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

    /// Overall readiness and a per-check report, at most [`FRESH_FOR`] old.
    pub async fn evaluate(&self) -> (bool, serde_json::Value) {
        let mut last = self.last.lock().await;
        if let Some((at, ready, report)) = &*last
            && at.elapsed() < FRESH_FOR
        {
            return (*ready, report.clone());
        }
        let (ready, report) = self.run_checks().await;
        *last = Some((std::time::Instant::now(), ready, report.clone()));
        (ready, report)
    }

    /// Runs every check concurrently.
    async fn run_checks(&self) -> (bool, serde_json::Value) {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test]
    async fn a_burst_of_probes_runs_the_checks_once_and_a_later_one_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let readiness = Readiness::new().check("counted", move || {
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            }
        });
        let verdicts = futures::future::join_all((0..50).map(|_| readiness.evaluate())).await;
        assert!(verdicts.iter().all(|(ready, _)| *ready));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::sleep(FRESH_FOR + Duration::from_millis(50)).await;
        readiness.evaluate().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
