//! Every service binary answers `--help`, becomes ready against the stack and exits
//! 0 on SIGTERM within 10 s.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pmcore_testkit::{
    TestDb, database_url, eventually, free_port, http_status, kafka_brokers, unique_prefix,
    with_database,
};

/// Each binary, the variable of its port, and of its operational port when it keeps
/// `/healthz`, `/readyz` and `/metrics` off its public port.
const SERVICES: [(&str, &str, Option<&str>); 7] = [
    ("api", "PMCORE_API_LISTEN", Some("PMCORE_API_OPS_LISTEN")),
    ("worker", "PMCORE_WORKER_LISTEN", None),
    ("scheduler", "PMCORE_SCHEDULER_LISTEN", None),
    ("bucket-watcher", "PMCORE_BUCKET_WATCHER_LISTEN", None),
    (
        "audit-log",
        "PMCORE_AUDIT_LOG_LISTEN",
        Some("PMCORE_AUDIT_LOG_OPS_LISTEN"),
    ),
    (
        "messaging",
        "PMCORE_MESSAGING_LISTEN",
        Some("PMCORE_MESSAGING_OPS_LISTEN"),
    ),
    (
        "der-gateway-relay",
        "PMCORE_RELAY_LISTEN",
        Some("PMCORE_RELAY_OPS_LISTEN"),
    ),
];

/// The service binaries sit next to this test's `deps/` folder (`just test` builds them).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first",
        path.display()
    );
    path
}

#[test]
fn every_binary_lists_its_configuration_in_help() {
    for (name, listen_env, ops_env) in SERVICES {
        let out = Command::new(binary(name))
            .arg("--help")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{name} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        for expected in [
            "PMCORE_DATABASE_URL",
            "PMCORE_KAFKA_BROKERS",
            listen_env,
            ops_env.unwrap_or(listen_env),
            "migrate",
            "healthcheck",
        ] {
            assert!(
                help.contains(expected),
                "{name} --help lacks {expected}:\n{help}"
            );
        }
        assert!(
            !help.contains("pmcore:pmcore@"),
            "{name} --help must not print the database password"
        );
    }
}

#[tokio::test]
async fn every_binary_becomes_ready_and_exits_zero_on_sigterm_within_ten_seconds() {
    let db = TestDb::new().await.expect("test database");
    let prefix = unique_prefix();
    for (name, listen_env, ops_env) in SERVICES {
        let port = free_port();
        let ops_port = free_port();
        let mut child = Command::new(binary(name))
            .env(
                "PMCORE_DATABASE_URL",
                with_database(&database_url(), &db.name),
            )
            .env("PMCORE_KAFKA_BROKERS", kafka_brokers())
            .env("PMCORE_KAFKA_TOPIC_PREFIX", &prefix)
            .env(listen_env, format!("127.0.0.1:{port}"))
            .env(
                ops_env.unwrap_or("PMCORE_UNUSED"),
                format!("127.0.0.1:{ops_port}"),
            )
            .env("PMCORE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starts");
        let public: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let addr = match ops_env {
            Some(_) => ([127, 0, 0, 1], ops_port).into(),
            None => public,
        };
        eventually(
            Duration::from_secs(60),
            &format!("{name} to be ready"),
            || async move { (http_status(addr, "/readyz").await == Some(200)).then_some(()) },
        )
        .await;
        let metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("metrics");
        assert_eq!(metrics.status().as_u16(), 200, "{name} serves /metrics");
        let text = metrics.text().await.expect("metrics body");
        assert!(
            text.contains(r#"pmcore_http_request_duration_seconds_bucket{method="GET",route="/readyz",status="200""#),
            "{name} measures its requests:\n{text}"
        );
        if ops_env.is_some() {
            for path in ["/readyz", "/metrics", "/healthz"] {
                assert_eq!(
                    http_status(public, path).await,
                    Some(404),
                    "{name} keeps {path} off its public port"
                );
            }
        }

        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let started = Instant::now();
        let exit = loop {
            if let Some(exit) = child.try_wait().expect("wait") {
                break exit;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("{name} did not stop within 10 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(exit.success(), "{name} exited with {exit}");
    }
}
