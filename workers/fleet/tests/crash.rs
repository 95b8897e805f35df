//! Crash: the ingestor and the KPI worker run as `fleet` processes on the
//! fixture, are killed with SIGKILL mid-stream, and restarted. Afterwards no
//! result is lost or doubled: `measurements` holds each distinct event once
//! and `kpi_windows` equals the oracle computed from the fixture.

#[path = "../../kpi-worker/tests/support/expected.rs"]
mod expected;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use expected::{assert_windows_match, fed_with_fixture, Fed};
use fleet_runtime::events::{TELEMETRY_NORMALIZED, TELEMETRY_RAW};
use fleet_runtime::kafka::committed_total;
use fleetbench::services::{Broker, Postgres};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A worker process, killed when dropped so a failing test leaves none.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `fleet WORKER` with small batches, so a kill lands mid-stream.
/// Each worker is a static group member (its name as instance id), as a
/// restarted pod of a StatefulSet would be: the restarted process takes its
/// partitions back at once. Without it, tansu 0.6.0 never hands the
/// partitions of a SIGKILLed member to the new one (seen here: nothing
/// consumed within 120 s).
fn spawn(worker: &str, broker: &Broker, postgres: &Postgres) -> Worker {
    Worker(
        Command::new(env!("CARGO_BIN_EXE_fleet"))
            .arg(worker)
            .env("KAFKA_BROKERS", &broker.bootstrap_servers)
            .env("DATABASE_URL", &postgres.url)
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("BATCH_MAX_EVENTS", "100")
            .env("KAFKA_GROUP_INSTANCE_ID", worker)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the fleet binary starts"),
    )
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(0)
}

/// Waits until `ready` holds, at most `limit`.
async fn wait_until<F, Fut>(limit: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !ready().await {
        assert!(
            started.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_ingestor_and_kpi_worker_mid_stream_loses_and_doubles_nothing() {
    let Fed {
        broker,
        postgres,
        lines,
        distinct,
    } = fed_with_fixture(&root()).await;
    let pool = sqlx::PgPool::connect(&postgres.url).await.unwrap();

    let mut ingestor = spawn("data-ingestor", &broker, &postgres);
    let mut kpi = spawn("kpi-worker", &broker, &postgres);
    let limit = Duration::from_secs(120);
    wait_until(limit, || async {
        count(&pool, "SELECT count(*) FROM kpi_windows").await > 0
    })
    .await;
    let stored_at_kill = count(&pool, "SELECT count(*) FROM measurements").await;
    ingestor.0.kill().expect("SIGKILL reaches the ingestor");
    kpi.0.kill().expect("SIGKILL reaches the KPI worker");
    ingestor.0.wait().unwrap();
    kpi.0.wait().unwrap();
    assert!(
        stored_at_kill < distinct,
        "the kill came after the whole stream ({stored_at_kill})"
    );

    let mut ingestor = spawn("data-ingestor", &broker, &postgres);
    let mut kpi = spawn("kpi-worker", &broker, &postgres);
    let brokers = broker.bootstrap_servers.clone();
    let total = lines.len() as i64;
    wait_until(limit, || {
        let brokers = brokers.clone();
        async move {
            committed_total(&brokers, "data-ingestor", TELEMETRY_RAW, 3).unwrap_or(0) == total
                && committed_total(&brokers, "kpi-worker", TELEMETRY_NORMALIZED, 3).unwrap_or(0)
                    >= distinct
        }
    })
    .await;
    for child in [&ingestor, &kpi] {
        Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap();
    }
    assert!(
        ingestor.0.wait().unwrap().success(),
        "the ingestor stops cleanly on SIGTERM"
    );
    assert!(
        kpi.0.wait().unwrap().success(),
        "the KPI worker stops cleanly on SIGTERM"
    );

    assert_eq!(
        count(&pool, "SELECT count(*) FROM measurements").await,
        distinct
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM measurements WHERE NOT published"
        )
        .await,
        0
    );
    assert_windows_match(&pool, &lines).await;
}
