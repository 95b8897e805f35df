//! The ingestor and the KPI worker on the committed fixture, against the
//! real broker and PostgreSQL: every closed window equals the one computed
//! here, independently, from the fixture file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use data_ingestor::{normalize, Ingestor};
use fleet_runtime::events::{RawTelemetry, TELEMETRY_NORMALIZED, TELEMETRY_RAW};
use fleet_runtime::{run_until_committed, RuntimeConfig};
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::services::{Broker, Placement, Postgres};
use kpi_worker::windows::window_start;
use kpi_worker::KpiWorker;

const WINDOW_MS: i64 = 60_000;
const LATENESS_MS: i64 = 60_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One expected window: count, mean, min, max, p95, error rate.
#[derive(Debug, PartialEq)]
struct Expected {
    count: i64,
    mean: f64,
    min: f64,
    max: f64,
    p95: f64,
    error_rate: f64,
}

/// The windows the KPI worker must close, from the fixture alone: events
/// deduplicated by id, normalised, grouped per series and window, closed up
/// to the series' latest event time less the lateness.
fn expected_windows(lines: &[String]) -> BTreeMap<String, Expected> {
    let mut seen = HashSet::new();
    let mut series: BTreeMap<(String, String), Points> = BTreeMap::new();
    for line in lines {
        let raw: RawTelemetry = serde_json::from_str(line).unwrap();
        if !seen.insert(raw.event_id.clone()) {
            continue;
        }
        let m = normalize::measurement(raw).unwrap();
        series
            .entry((m.entity, m.metric))
            .or_default()
            .push((m.ts_ms, m.value, m.error));
    }
    let mut windows = BTreeMap::new();
    for ((entity, metric), points) in series {
        let latest = points.iter().map(|p| p.0).max().unwrap();
        let closed_until = window_start(latest - LATENESS_MS, WINDOW_MS);
        let mut by_window: BTreeMap<i64, Vec<(f64, bool)>> = BTreeMap::new();
        for (ts, value, error) in points {
            if ts < closed_until {
                by_window
                    .entry(window_start(ts, WINDOW_MS))
                    .or_default()
                    .push((value, error));
            }
        }
        for (start, mut values) in by_window {
            values.sort_by(|a, b| a.0.total_cmp(&b.0));
            let n = values.len();
            let rank = ((0.95 * n as f64).ceil() as usize).max(1) - 1;
            windows.insert(
                format!("{entity}|{metric}|{start}"),
                Expected {
                    count: n as i64,
                    mean: values.iter().map(|v| v.0).sum::<f64>() / n as f64,
                    min: values[0].0,
                    max: values[n - 1].0,
                    p95: values[rank].0,
                    error_rate: values.iter().filter(|v| v.1).count() as f64 / n as f64,
                },
            );
        }
    }
    windows
}

/// A series' points: event time, value, error flag.
type Points = Vec<(i64, f64, bool)>;
/// A stored window as read back: id, count, mean, min, max, p95, error rate, published.
type StoredWindow = (String, i64, f64, f64, f64, f64, f64, bool);

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
