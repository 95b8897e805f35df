//! The ingestor, the KPI worker, the forecaster and the SLA reporter on the
//! committed fixture, against the real broker and PostgreSQL: every
//! forecast and every SLA report equals the one computed here, without the
//! workers' code, from the stored KPI windows (themselves checked against
//! the fixture), and every capacity breach reaches the forecasts topic.

#[path = "../../kpi-worker/tests/support/expected.rs"]
mod expected;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use data_ingestor::Ingestor;
use expected::{assert_windows_match, fed_with_fixture, Fed, LATENESS_MS, WINDOW_MS};
use fleet_runtime::events::{
    Forecast, FORECASTS, KPI_WINDOWS, TELEMETRY_NORMALIZED, TELEMETRY_RAW,
};
use fleet_runtime::{run_until_committed, RuntimeConfig};
use fleetbench::services::{Broker, Postgres};
use forecaster::Forecaster;
use kpi_worker::KpiWorker;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use sla_reporter::slo::SloTargets;
use sla_reporter::SlaReporter;

/// The cpu capacity the test forecasts against: the fixture's cpu runs near
/// 35 %, so only the predictions its injected spikes pull up breach it.
const CPU_CAPACITY: f64 = 45.0;
/// Horizon, history and minimum history: the forecaster's defaults.
const HORIZON: i64 = 5;
const HISTORY: usize = 30;
const MIN_HISTORY: usize = 10;

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

/// A stored KPI window: entity, service, metric, start ms, count, mean, p95,
/// error rate.
type Window = (String, String, String, i64, i64, f64, f64, f64);

async fn stored_windows(pool: &sqlx::PgPool) -> Vec<Window> {
    sqlx::query_as(
        "SELECT entity, service, metric, \
             round(extract(epoch FROM window_start) * 1000)::bigint, count, mean, p95, error_rate \
         FROM kpi_windows ORDER BY entity, metric, window_start",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The forecasts the forecaster must have made: for each window with at
/// least `MIN_HISTORY` windows of history, the least-squares line through
/// the last `HISTORY` means (trend only: half an hour of history holds no
/// whole day), continued `HORIZON` windows; by forecast id.
fn expected_forecasts(windows: &[Window]) -> BTreeMap<String, f64> {
    let mut series: BTreeMap<(&str, &str), Vec<(i64, f64)>> = BTreeMap::new();
    for (entity, _, metric, start, _, mean, _, _) in windows {
        series
            .entry((entity, metric))
            .or_default()
            .push((*start, *mean));
    }
    let mut forecasts = BTreeMap::new();
    for ((entity, metric), points) in series {
        for end in MIN_HISTORY..=points.len() {
            let history = &points[end.saturating_sub(HISTORY)..end];
            let newest = history[history.len() - 1].0;
            let xs: Vec<f64> = history
                .iter()
                .map(|p| ((p.0 - newest) / WINDOW_MS) as f64)
                .collect();
            let n = xs.len() as f64;
            let x_mean = xs.iter().sum::<f64>() / n;
            let y_mean = history.iter().map(|p| p.1).sum::<f64>() / n;
            let sxy: f64 = xs
                .iter()
                .zip(history)
                .map(|(x, p)| (x - x_mean) * (p.1 - y_mean))
                .sum();
            let sxx: f64 = xs.iter().map(|x| (x - x_mean).powi(2)).sum();
            let slope = sxy / sxx;
            for step in 1..=HORIZON {
                let id = format!("{entity}|{metric}|{newest}|{}", newest + step * WINDOW_MS);
                forecasts.insert(id, y_mean + slope * (step as f64 - x_mean));
            }
        }
    }
    forecasts
}

/// An SLA report: windows, requests, errors, availability, latency p95,
/// availability met, latency met, burn.
type Report = (i64, i64, i64, f64, f64, bool, bool, f64);

/// The reports the SLA reporter must have written, by (service, day since
/// the epoch), from the latency windows and the default targets.
fn expected_reports(windows: &[Window]) -> BTreeMap<(String, i32), Report> {
    let mut days: BTreeMap<(String, i32), Vec<&Window>> = BTreeMap::new();
    for window in windows.iter().filter(|w| w.2 == "latency") {
        let day = (window.3 / 86_400_000) as i32;
        days.entry((window.1.clone(), day))
            .or_default()
            .push(window);
    }
    let targets = SloTargets::default();
    days.into_iter()
        .map(|(key, windows)| {
            let requests: i64 = windows.iter().map(|w| w.4).sum();
            let errors: i64 = windows
                .iter()
                .map(|w| (w.7 * w.4 as f64).round() as i64)
                .sum();
            let mut p95s: Vec<f64> = windows.iter().map(|w| w.6).collect();
            p95s.sort_by(f64::total_cmp);
            let rank = ((0.95 * p95s.len() as f64).ceil() as usize).max(1) - 1;
            let p95 = p95s[rank];
            let availability = 1.0 - errors as f64 / requests as f64;
            let report = (
                windows.len() as i64,
                requests,
                errors,
                availability,
                p95,
                availability >= targets.availability,
                p95 <= targets.latency_p95_ms,
                (1.0 - availability) / (1.0 - targets.availability),
            );
            (key, report)
        })
        .collect()
}

/// The forecast ids on the forecasts topic, read until it is idle.
async fn published_forecast_ids(broker: &Broker) -> BTreeSet<String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap_servers)
        .set("group.id", "forecast-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a reader is created");
    consumer
        .subscribe(&[FORECASTS])
        .expect("the reader subscribes");
    let mut ids = BTreeSet::new();
    let idle = Duration::from_secs(10);
    while let Ok(message) = tokio::time::timeout(idle, consumer.recv()).await {
        let message = message.expect("the reader receives");
        let forecast: Forecast =
            serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
        assert_eq!(message.key(), Some(forecast.entity.as_bytes()));
        ids.insert(forecast.forecast_id);
    }
    ids
}

async fn run_pipeline(fed: &Fed) {
    let Fed {
        broker,
        postgres,
        lines,
        distinct,
    } = fed;
    let timeout = Duration::from_secs(180);
    let ingestor = config(broker, postgres, "data-ingestor");
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
    let kpi = KpiWorker::new(
        Duration::from_millis(WINDOW_MS as u64),
        Duration::from_millis(LATENESS_MS as u64),
    );
    let kpi_config = config(broker, postgres, "kpi-worker");
    run_until_committed(kpi, kpi_config, TELEMETRY_NORMALIZED, 3, *distinct, timeout)
        .await
        .unwrap();

    let mut settings = forecaster::Settings::default();
    settings.capacities.insert("cpu".into(), CPU_CAPACITY);
    let windows = 12 * 58;
    let (forecast_committed, sla_committed) = tokio::join!(
        run_until_committed(
            Forecaster::new(settings),
            config(broker, postgres, forecaster::NAME),
            KPI_WINDOWS,
            3,
            windows,
            timeout,
        ),
        run_until_committed(
            SlaReporter::new(SloTargets::default()),
            config(broker, postgres, sla_reporter::NAME),
            KPI_WINDOWS,
            3,
            windows,
            timeout,
        ),
    );
    assert_eq!(forecast_committed.unwrap(), windows);
    assert_eq!(sla_committed.unwrap(), windows);
}

/// A stored forecast: id, metric, predicted, capacity, breach, published.
type StoredForecast = (String, String, f64, Option<f64>, bool, bool);

/// Asserts that `forecasts` holds exactly the independent forecasts of
/// `windows`, breaches flagged and published, and returns the breach ids.
async fn assert_forecasts_match(pool: &sqlx::PgPool, windows: &[Window]) -> BTreeSet<String> {
    let want = expected_forecasts(windows);
    assert_eq!(want.len(), 12 * (58 - 9) * 5, "forecast windows x horizon");
    let stored: Vec<StoredForecast> = sqlx::query_as(
        "SELECT forecast_id, metric, predicted, capacity, breach, published FROM forecasts",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), want.len(), "stored forecasts");
    let mut breaches = BTreeSet::new();
    for (id, metric, predicted, capacity, breach, published) in stored {
        let expected = want
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected forecast {id}"));
        assert!(
            (predicted - expected).abs() < 1e-6 * expected.abs().max(1.0),
            "{id}: predicted {predicted}, independently {expected}"
        );
        let want_capacity = match metric.as_str() {
            "cpu" => Some(CPU_CAPACITY),
            "latency" => Some(250.0),
            _ => None,
        };
        assert_eq!(capacity, want_capacity, "{id}");
        assert_eq!(breach, capacity.is_some_and(|c| predicted >= c), "{id}");
        assert_eq!(published, breach, "{id}: published only when breaching");
        if breach {
            breaches.insert(id);
        }
    }
    breaches
}

/// A stored SLA report: service, day since the epoch, then as [`Report`].
type ReportRow = (String, i32, i64, i64, i64, f64, f64, bool, bool, f64);

/// Asserts that `sla_reports` equals the independent reports of `windows`.
async fn assert_reports_match(pool: &sqlx::PgPool, windows: &[Window]) {
    let rows: Vec<ReportRow> = sqlx::query_as(
        "SELECT service, (day - date '1970-01-01'), windows, requests, errors, availability, \
             latency_p95_ms, availability_met, latency_met, error_budget_burn FROM sla_reports",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let stored: BTreeMap<(String, i32), Report> = rows
        .into_iter()
        .map(|r| ((r.0, r.1), (r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9)))
        .collect();
    let want = expected_reports(windows);
    assert_eq!(want.len(), 3, "three services, one day");
    assert_eq!(stored, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn forecasts_and_sla_reports_equal_an_independent_computation_from_the_windows() {
    let fed = fed_with_fixture(&root()).await;
    run_pipeline(&fed).await;
    let pool = sqlx::PgPool::connect(&fed.postgres.url).await.unwrap();
    assert_windows_match(&pool, &fed.lines).await;
    let windows = stored_windows(&pool).await;

    let breaches = assert_forecasts_match(&pool, &windows).await;
    assert!(
        !breaches.is_empty(),
        "the injected cpu spikes breach {CPU_CAPACITY} %"
    );
    assert_eq!(published_forecast_ids(&fed.broker).await, breaches);
    assert_reports_match(&pool, &windows).await;
}
