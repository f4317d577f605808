//! The parts every service wires the same way: its HTTP listener, the Postgres pool,
//! Kafka topics and the outbox relay.

use std::net::SocketAddr;

use axum::Router;
use futures::future::BoxFuture;
use pmcore_db::DbConfig;
use pmcore_kafka::{KafkaConfig, outbox::OutboxRelay, topics};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    Readiness,
    health::Step,
    http::{ops_router, serve},
};

#[derive(Debug)]
pub struct Platform {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    /// Done once the catalog's topics exist.
    pub topics_ready: Step,
    listener: TcpListener,
    /// Where `/healthz`, `/readyz` and `/metrics` are served when not on `listener`.
    ops: Option<TcpListener>,
}

impl Platform {
    /// Binds the listener and prepares a lazy pool; needs neither Postgres nor the
    /// broker to be up yet.
    pub async fn new(
        listen: SocketAddr,
        db: &DbConfig,
        kafka: &KafkaConfig,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        Ok(Self {
            pool: pmcore_db::lazy_pool(db)?,
            kafka: kafka.clone(),
            topics_ready: Step::default(),
            listener,
            ops: None,
        })
    }

    /// Serves the operational endpoints on a listener of their own at `ops`, away from
    /// the public port (they say what the service depends on and cost a check of each);
    /// None keeps them on the service's port, for services that serve nothing else.
    pub async fn with_ops(mut self, ops: Option<SocketAddr>) -> anyhow::Result<Self> {
        if let Some(ops) = ops {
            let listener = TcpListener::bind(ops).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {ops} (operational endpoints): {e}")
            })?;
            self.ops = Some(listener);
        }
        Ok(self)
    }

    /// Where the operational endpoints answer.
    pub fn ops_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.ops.as_ref().unwrap_or(&self.listener).local_addr()?)
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Postgres, the broker, the topics, and no consumer group stuck.
    pub fn readiness(&self) -> Readiness {
        Readiness::new()
            .postgres(&self.pool)
            .kafka(&self.kafka)
            .step("topics", &self.topics_ready)
            .consumers(&self.kafka)
    }

    /// Creates the catalog's topics once the broker answers.
    pub fn prepare_topics(
        &self,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        let kafka = self.kafka.clone();
        let step = self.topics_ready.clone();
        Box::pin(async move {
            let names = topics::all(&kafka);
            tokio::select! {
                () = cancel.cancelled() => Ok(()),
                result = topics::ensure_when_ready(&kafka, &names) => {
                    result?;
                    step.done();
                    tracing::info!(count = names.len(), "topics ready");
                    Ok(())
                }
            }
        })
    }

    /// Publishes this process's share of `pm.outbox` until cancelled.
    pub fn outbox_relay(
        &self,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        let relay = OutboxRelay::new(self.pool.clone(), self.kafka.clone());
        Box::pin(async move {
            relay.run(cancel).await;
            Ok(())
        })
    }

    /// Every hour, forgets the ids `inbox` holds for longer than the configured
    /// retention (`PMCORE_INBOX_RETENTION_DAYS`); for services that own an inbox table.
    pub fn inbox_pruner(
        &self,
        inbox: pmcore_db::inbox::Inbox,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        let pool = self.pool.clone();
        let keep_days = self.kafka.inbox_retention_days.max(1);
        let limit = self.kafka.database_timeout();
        Box::pin(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    _ = tick.tick() => {}
                }
                match pmcore_db::bounded(limit, inbox.prune(&pool, keep_days, 10_000)).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, keep_days, "old inbox ids forgotten"),
                    Err(error) => tracing::warn!(%error, "inbox pruning failed"),
                }
            }
        })
    }

    /// Serves `routes` merged with the operational endpoints until cancelled.
    pub fn serve(
        self,
        routes: Router,
        readiness: Readiness,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        match self.ops {
            None => Box::pin(serve(
                self.listener,
                routes.merge(ops_router(readiness)),
                cancel,
            )),
            Some(ops) => Box::pin(async move {
                futures::try_join!(
                    serve(self.listener, routes, cancel.clone()),
                    serve(ops, ops_router(readiness), cancel),
                )?;
                Ok(())
            }),
        }
    }
}

/// A task that ends without failing (a consumer, a sweep), as [`supervise`] takes it.
pub fn task(
    future: impl Future<Output = ()> + Send + 'static,
) -> BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        future.await;
        Ok(())
    })
}

/// Runs a service's tasks side by side. The first that fails cancels the others;
/// all are awaited, so in-flight work finishes before the service returns.
pub async fn supervise(
    cancel: CancellationToken,
    tasks: Vec<BoxFuture<'static, anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let guarded = tasks.into_iter().map(|task| {
        let cancel = cancel.clone();
        async move {
            let result = task.await;
            if let Err(error) = &result {
                tracing::error!(error = %format!("{error:#}"), "task failed; stopping the service");
                cancel.cancel();
            }
            result
        }
    });
    futures::future::join_all(guarded)
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()
        .map(|_| ())
}
