//! The session lock on a real Postgres: one holder at a time, and asking for a lock
//! someone else holds costs no connection.

use std::time::Duration;

use pmcore_db::{DbConfig, lock::SessionLock};

const LIMIT: Duration = Duration::from_secs(5);

fn pool() -> sqlx::PgPool {
    let url = pmcore_testkit::with_database(&pmcore_testkit::database_url(), "postgres");
    pmcore_db::lazy_pool(&DbConfig::from_url(&url)).expect("pool")
}

#[tokio::test]
async fn a_lock_held_elsewhere_is_refused_and_the_asking_connection_stays_pooled() {
    // A key of this test's own: tests share the server.
    let key = i64::from(std::process::id()) << 20 | 0x10c;
    let pool = pool();
    let held = SessionLock::try_take(&pool, key, LIMIT)
        .await
        .expect("asked")
        .expect("free");
    for _ in 0..3 {
        let refused = SessionLock::try_take(&pool, key, LIMIT)
            .await
            .expect("asked");
        assert!(refused.is_none(), "the lock has one holder");
        // The asking connection goes back to the pool (asynchronously, after its
        // release check) instead of being closed: standby relays ask every second.
        pmcore_testkit::eventually(
            Duration::from_secs(5),
            "the asking connection pooled",
            || {
                let idle = pool.num_idle();
                async move { (idle == 1).then_some(()) }
            },
        )
        .await;
        assert_eq!(pool.size(), 2, "the holder's and the asker's, no new one");
    }
    held.release().await;
    let taken = SessionLock::try_take(&pool, key, LIMIT)
        .await
        .expect("asked");
    assert!(taken.is_some(), "free again after release");
}
