//! The ingestor and the KPI worker on the committed fixture, against the
//! real broker and PostgreSQL: every closed window equals the one computed
//! here, independently, from the fixture file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use data_ingestor::Ingestor;
use fleet_runtime::events::{TELEMETRY_NORMALIZED, TELEMETRY_RAW};
use fleet_runtime::{run_until_committed, RuntimeConfig};
use fleetbench::services::{Broker, Postgres};
use kpi_worker::KpiWorker;

#[path = "support/expected.rs"]
mod expected;

use expected::{assert_windows_match, fed_with_fixture, Fed, LATENESS_MS, WINDOW_MS};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config(broker: &Broker, postgres: &Postgres, name: &str) -> RuntimeConfig {
    let env = HashMap::from([
        ("KAFKA_BROKERS", broker.bootstrap_servers.clone()),
        ("DATABASE_URL", postgres.url.clone()),
        ("METRICS_ADDR", "127.0.0.1:0".to_string()),
    ]);
    RuntimeConfig::from_lookup(name, |k| env.get(k).cloned()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_closed_window_equals_the_one_computed_from_the_fixture() {
    let Fed {
        broker,
        postgres,
        lines,
        distinct,
    } = fed_with_fixture(&root()).await;

    let timeout = Duration::from_secs(180);
    let ingestor = config(&broker, &postgres, "data-ingestor");
    let total = lines.len() as i64;
    run_until_committed(
        Ingestor::default(),
        ingestor,
        TELEMETRY_RAW,
        3,
        total,
        timeout,
    )
    .await
    .unwrap();
    let worker = KpiWorker::new(
        Duration::from_millis(WINDOW_MS as u64),
        Duration::from_millis(LATENESS_MS as u64),
    );
    let kpi = config(&broker, &postgres, "kpi-worker");
    let committed = run_until_committed(worker, kpi, TELEMETRY_NORMALIZED, 3, distinct, timeout)
        .await
        .unwrap();
    assert_eq!(committed, distinct);

    let pool = sqlx::PgPool::connect(&postgres.url).await.unwrap();
    assert_windows_match(&pool, &lines).await;
}
