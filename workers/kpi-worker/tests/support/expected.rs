//! The test oracle of the KPI windows: what the KPI worker must have
//! closed, computed from the fixture file alone, without the worker's code
//! (only the ingestor's unit conversion), and the check of the stored
//! windows against it. Shared by the KPI worker's fixture test and the
//! fleet's crash test.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use data_ingestor::normalize;
use fleet_runtime::events::{RawTelemetry, TELEMETRY_NORMALIZED, TELEMETRY_RAW};
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::services::{Broker, Placement, Postgres};

/// Window length the tests run the KPI worker with, ms.
pub const WINDOW_MS: i64 = 60_000;
/// Allowed lateness the tests run the KPI worker with, ms.
pub const LATENESS_MS: i64 = 60_000;

/// A broker and PostgreSQL with the fixture produced to `telemetry.raw`.
pub struct Fed {
    /// The broker, topics created.
    pub broker: Broker,
    /// PostgreSQL, not yet migrated.
    pub postgres: Postgres,
    /// The fixture's lines, as produced.
    pub lines: Vec<String>,
    /// Distinct event ids among them.
    pub distinct: i64,
}

/// Starts the services, creates the two topics the ingestor and the KPI
/// worker use (3 partitions), and produces the fixture keyed by entity.
pub async fn fed_with_fixture(root: &Path) -> Fed {
    let fleet = FleetConfig::load(&root.join("fleetbench.toml")).expect("fleetbench.toml loads");
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    let placement = Placement::default();
    let broker = Broker::start(&engine, &fleet, &placement)
        .await
        .expect("the broker starts");
    let postgres = Postgres::start(&engine, &fleet, &placement)
        .await
        .expect("postgres starts");
    broker
        .create_topics(&[TELEMETRY_RAW, TELEMETRY_NORMALIZED], 3)
        .await
        .expect("the topics are created");
    let (lines, distinct) = fixture(root);
    fleetbench::feed::produce_lines(&broker.bootstrap_servers, TELEMETRY_RAW, &lines)
        .await
        .expect("the fixture is produced");
    Fed {
        broker,
        postgres,
        lines,
        distinct,
    }
}

/// The committed fixture's lines, and how many distinct event ids they hold.
pub fn fixture(root: &Path) -> (Vec<String>, i64) {
    let lines: Vec<String> = std::fs::read_to_string(root.join("fixtures/telemetry.jsonl"))
        .expect("the fixture is committed")
        .lines()
        .map(str::to_string)
        .collect();
    let distinct = lines
        .iter()
        .map(|l| serde_json::from_str::<RawTelemetry>(l).unwrap().event_id)
        .collect::<HashSet<_>>()
        .len() as i64;
    (lines, distinct)
}

/// Asserts that `kpi_windows` holds exactly the oracle's windows of
/// `lines`, every one published, with equal aggregates.
pub async fn assert_windows_match(pool: &sqlx::PgPool, lines: &[String]) {
    let rows: Vec<StoredWindow> = sqlx::query_as(
        "SELECT window_id, count, mean, min, max, p95, error_rate, published FROM kpi_windows",
    )
    .fetch_all(pool)
    .await
    .expect("kpi_windows is readable");
    let oracle = expected_windows(lines);
    assert_eq!(
        oracle.len(),
        12 * 58,
        "12 series, 58 of their 60 windows closed"
    );
    assert_eq!(rows.len(), oracle.len(), "closed windows");
    for (id, count, mean, min, max, p95, error_rate, published) in rows {
        let want = oracle
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

/// Start of the window holding `ts_ms`.
fn window_start(ts_ms: i64, window_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(window_ms)
}

/// One expected window: count, mean, min, max, p95, error rate.
#[derive(Debug, PartialEq)]
pub struct Expected {
    pub count: i64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub p95: f64,
    pub error_rate: f64,
}

/// The windows the KPI worker must close, from the fixture alone: events
/// deduplicated by id, normalised, grouped per series and window, closed up
/// to the series' latest event time less the lateness.
pub fn expected_windows(lines: &[String]) -> BTreeMap<String, Expected> {
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
pub type Points = Vec<(i64, f64, bool)>;
/// A stored window as read back: id, count, mean, min, max, p95, error rate, published.
type StoredWindow = (String, i64, f64, f64, f64, f64, f64, bool);
