//! The ingestor and the KPI worker on the committed fixture, against the
//! real broker and PostgreSQL: every closed window equals the one computed
//! here, independently, from the fixture file.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use data_ingestor::Ingestor;
use fleet_runtime::events::{RawTelemetry, TELEMETRY_NORMALIZED, TELEMETRY_RAW};
use fleet_runtime::{run_until_committed, RuntimeConfig};
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::services::{Broker, Placement, Postgres};
use kpi_worker::KpiWorker;

#[path = "support/expected.rs"]
mod expected;

use expected::{expected_windows, StoredWindow, LATENESS_MS, WINDOW_MS};

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
    let fleet = FleetConfig::load(&root().join("fleetbench.toml")).unwrap();
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    let placement = Placement::default();
    let broker = Broker::start(&engine, &fleet, &placement).await.unwrap();
    let postgres = Postgres::start(&engine, &fleet, &placement).await.unwrap();
    broker
        .create_topics(&[TELEMETRY_RAW, TELEMETRY_NORMALIZED], 3)
        .await
        .unwrap();
    let lines: Vec<String> = std::fs::read_to_string(root().join("fixtures/telemetry.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let distinct = lines
        .iter()
        .map(|l| serde_json::from_str::<RawTelemetry>(l).unwrap().event_id)
        .collect::<HashSet<_>>()
        .len() as i64;
    fleetbench::feed::produce_lines(&broker.bootstrap_servers, TELEMETRY_RAW, &lines)
        .await
        .unwrap();

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
    let rows: Vec<StoredWindow> = sqlx::query_as(
        "SELECT window_id, count, mean, min, max, p95, error_rate, published FROM kpi_windows",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = expected_windows(&lines);
    assert_eq!(
        expected.len(),
        12 * 58,
        "12 series, 58 of their 60 windows closed"
    );
    assert_eq!(rows.len(), expected.len(), "closed windows");
    for (id, count, mean, min, max, p95, error_rate, published) in rows {
        let want = expected
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected window {id}"));
        assert!(published, "{id} was not published");
        assert_eq!(
            (count, min, max, p95),
            (want.count, want.min, want.max, want.p95),
            "{id}"
        );
        assert!(
            (mean - want.mean).abs() < 1e-9,
            "{id}: mean {mean} != {}",
            want.mean
        );
        assert!(
            (error_rate - want.error_rate).abs() < 1e-12,
            "{id}: error rate"
        );
    }
}
