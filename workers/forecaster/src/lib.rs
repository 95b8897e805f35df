//! forecaster: for every closed KPI window, a trend and seasonality
//! regression (linfa, ordinary least squares) over the series' recent
//! windows predicts the next windows' means, and flags the predictions
//! that reach the metric's capacity.
//!
//! The history of a window W is the last `FORECAST_HISTORY` windows of its
//! series with a start at or before W's, read from `kpi_windows`, where
//! closed windows never change: the same window always gives the same
//! forecast, whatever the batch boundaries or replays. A window with fewer
//! than `FORECAST_MIN_HISTORY` windows of history gives no forecast. The
//! model and its seasonal rule are described in [`model`].
//!
//! Every forecast is stored in `forecasts`, keyed by
//! `made_from|target_start_ms` (written once, `ON CONFLICT DO NOTHING`).
//! Those that breach (predicted value at or above the capacity) are
//! published to the `forecasts` topic, keyed by entity, from an outbox:
//! the `published` flag is set only once the broker has acknowledged them,
//! so a crash between commit and publication republishes them.
//!
//! Limits: the fit is not robust, so an anomalous window in the history
//! pulls the trend for the next `FORECAST_HISTORY` windows; a window whose
//! row is not in `kpi_windows` (an event not produced by the KPI worker)
//! gives no forecast; capacities are known for the metrics `cpu`,
//! `latency`, `memory` and `requests` only.

pub mod model;

use std::collections::BTreeMap;

use fleet_runtime::config::{env_number, ConfigError};
use fleet_runtime::events::{Forecast, KpiWindow, FORECASTS, KPI_WINDOWS};
use fleet_runtime::{Outcome, Output, ProcessError, Processor};
use model::{ModelSpec, Point};
use sqlx::{PgConnection, PgPool};
use tracing::{debug, warn};

/// The worker's name: consumer group, metrics label, log field.
pub const NAME: &str = "forecaster";

/// The metrics whose capacity can be set, with the variable that sets it
/// and its default (`None`: no capacity unless set).
pub const CAPACITIES: [(&str, &str, Option<f64>); 4] = [
    ("cpu", "FORECAST_CAPACITY_CPU", Some(90.0)),
    ("latency", "FORECAST_CAPACITY_LATENCY", Some(250.0)),
    ("memory", "FORECAST_CAPACITY_MEMORY", None),
    ("requests", "FORECAST_CAPACITY_REQUESTS", None),
];

/// Runs the forecaster as this process's worker, with its settings from
/// the environment; returns the exit code.
pub async fn run_process() -> i32 {
    fleet_runtime::run_configured(NAME, Settings::from_env().map(Forecaster::new)).await
}

/// How the forecaster fits and what it calls a breach.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `FORECAST_HISTORY`: most windows a fit uses (default 30).
    pub history: usize,
    /// `FORECAST_MIN_HISTORY`: fewest windows that give a forecast (default 10).
    pub min_history: usize,
    /// `FORECAST_HORIZON`: windows predicted after each window (default 5).
    pub horizon: u32,
    /// `FORECAST_SEASON_S`: seasonal period, seconds (default 86400).
    pub season_s: u64,
    /// Capacity per metric, in the metric's canonical unit:
    /// `FORECAST_CAPACITY_CPU` (percent, default 90),
    /// `FORECAST_CAPACITY_LATENCY` (ms, default 250),
    /// `FORECAST_CAPACITY_MEMORY` (bytes) and `FORECAST_CAPACITY_REQUESTS`
    /// (count), unset by default.
    pub capacities: BTreeMap<String, f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_lookup(|_| None).expect("the defaults are valid")
    }
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads the settings through `lookup`, for tests and embedding.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let history = env_number(&lookup, "FORECAST_HISTORY", 30, model::MIN_POINTS..=10_000)?;
        let min_history = env_number(
            &lookup,
            "FORECAST_MIN_HISTORY",
            10,
            model::MIN_POINTS..=10_000,
        )?;
        if min_history > history {
            return Err(ConfigError {
                variable: "FORECAST_MIN_HISTORY",
                problem: format!("{min_history} is more than FORECAST_HISTORY ({history})"),
            });
        }
        let mut capacities = BTreeMap::new();
        for (metric, variable, default) in CAPACITIES {
            if let Some(capacity) = env_capacity(&lookup, variable, default)? {
                capacities.insert(metric.to_string(), capacity);
            }
        }
        Ok(Self {
            history,
            min_history,
            horizon: env_number(&lookup, "FORECAST_HORIZON", 5, 1..=1_000)?,
            season_s: env_number(&lookup, "FORECAST_SEASON_S", 86_400, 60..=31_622_400)?,
            capacities,
        })
    }

    /// The capacity of `metric`, where it has one.
    pub fn capacity(&self, metric: &str) -> Option<f64> {
        self.capacities.get(metric).copied()
    }
}

/// A positive, finite number in `variable`, `default` when unset.
fn env_capacity(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: Option<f64>,
) -> Result<Option<f64>, ConfigError> {
    let Some(text) = lookup(variable) else {
        return Ok(default);
    };
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(Some(value)),
        _ => Err(ConfigError {
            variable,
            problem: format!("'{text}' is not a positive number"),
        }),
    }
}

/// The forecaster: its settings, and the ids of the breaches handed to the
/// runtime for publication and not yet marked published.
#[derive(Debug)]
pub struct Forecaster {
    settings: Settings,
    in_flight: Vec<String>,
}

impl Forecaster {
    /// A forecaster with `settings`.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            in_flight: Vec::new(),
        }
    }

    /// The forecasts made from `window`, given its series' stored windows
    /// `stored` (oldest first, covering at least the window's history):
    /// none when the window is not stored or has too little history.
    pub fn forecasts_of(&self, window: &KpiWindow, stored: &[Point]) -> Vec<Forecast> {
        let history = history_until(stored, window.window_start_ms, self.settings.history);
        if history.last().map(|p| p.start_ms) != Some(window.window_start_ms) {
            warn!(
                worker = NAME,
                window_id = %window.window_id,
                "window not in kpi_windows; no forecast"
            );
            return Vec::new();
        }
        if history.len() < self.settings.min_history {
            debug!(
                worker = NAME,
                window_id = %window.window_id,
                history = history.len(),
                "too little history for a forecast"
            );
            return Vec::new();
        }
        let spec = ModelSpec {
            window_ms: window.window_end_ms - window.window_start_ms,
            season_ms: self.settings.season_s as i64 * 1000,
            horizon: self.settings.horizon,
        };
        let predictions = match model::forecast(history, &spec) {
            Ok(predictions) => predictions,
            Err(error) => {
                warn!(worker = NAME, window_id = %window.window_id, %error, "no forecast");
                return Vec::new();
            }
        };
        let capacity = self.settings.capacity(&window.metric);
        predictions
            .into_iter()
            .map(|p| Forecast {
                forecast_id: format!("{}|{}", window.window_id, p.target_start_ms),
                series_key: window.series_key(),
                entity: window.entity.clone(),
                site: window.site.clone(),
                service: window.service.clone(),
                metric: window.metric.clone(),
                made_from: window.window_id.clone(),
                target_start_ms: p.target_start_ms,
                predicted: p.value,
                capacity,
                breach: capacity.is_some_and(|c| p.value >= c),
            })
            .collect()
    }
}

/// The last `count` points of `stored` (oldest first) that start at or
/// before `start_ms`.
pub fn history_until(stored: &[Point], start_ms: i64, count: usize) -> &[Point] {
    let end = stored.partition_point(|p| p.start_ms <= start_ms);
    &stored[end.saturating_sub(count)..end]
}

impl Processor for Forecaster {
    type Event = KpiWindow;

    fn name(&self) -> &'static str {
        NAME
    }

    fn input_topics(&self) -> Vec<String> {
        vec![KPI_WINDOWS.into()]
    }

    fn output_topics(&self) -> Vec<String> {
        vec![FORECASTS.into()]
    }

    fn parse(&self, _topic: &str, payload: &[u8]) -> Outcome<KpiWindow> {
        KpiWindow::from_payload(payload)
    }

    async fn process(
        &mut self,
        events: Vec<KpiWindow>,
        tx: &mut PgConnection,
    ) -> Result<Vec<Output>, ProcessError> {
        let mut forecasts = Vec::new();
        for ((entity, metric), windows) in by_series(events) {
            let first = windows.first().map_or(0, |w| w.window_start_ms);
            let last = windows.last().map_or(0, |w| w.window_start_ms);
            let stored =
                load_history(tx, &entity, &metric, first, last, self.settings.history).await?;
            for window in &windows {
                forecasts.extend(self.forecasts_of(window, &stored));
            }
        }
        store(tx, &forecasts).await?;
        let breaches = unpublished_breaches(tx).await?;
        debug!(
            worker = NAME,
            forecasts = forecasts.len(),
            breaches = breaches.len(),
            "batch forecast"
        );
        self.in_flight = breaches.iter().map(|f| f.forecast_id.clone()).collect();
        Ok(breaches
            .iter()
            .map(|f| Output::json(FORECASTS, f.entity.clone(), f))
            .collect())
    }

    async fn published(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        fleet_runtime::db::mark_published(pool, "forecasts", "forecast_id", &mut self.in_flight)
            .await
    }
}

/// The batch's windows per series, each once, oldest first.
fn by_series(events: Vec<KpiWindow>) -> BTreeMap<(String, String), Vec<KpiWindow>> {
    let mut series: BTreeMap<(String, String), BTreeMap<i64, KpiWindow>> = BTreeMap::new();
    for window in events {
        series
            .entry((window.entity.clone(), window.metric.clone()))
            .or_default()
            .insert(window.window_start_ms, window);
    }
    series
        .into_iter()
        .map(|(key, windows)| (key, windows.into_values().collect()))
        .collect()
}

/// The stored windows of one series from the oldest one in the history of
/// the window starting at `first_ms` up to the one starting at `last_ms`,
/// oldest first.
async fn load_history(
    tx: &mut PgConnection,
    entity: &str,
    metric: &str,
    first_ms: i64,
    last_ms: i64,
    history: usize,
) -> Result<Vec<Point>, sqlx::Error> {
    let rows: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT round(extract(epoch FROM window_start) * 1000)::bigint, mean FROM kpi_windows \
         WHERE entity = $1 AND metric = $2 AND window_start <= to_timestamp($4 / 1000.0) \
           AND window_start >= COALESCE( \
               (SELECT window_start FROM kpi_windows \
                WHERE entity = $1 AND metric = $2 AND window_start <= to_timestamp($3 / 1000.0) \
                ORDER BY window_start DESC OFFSET $5 LIMIT 1), '-infinity') \
         ORDER BY window_start",
    )
    .bind(entity)
    .bind(metric)
    .bind(first_ms)
    .bind(last_ms)
    .bind(history as i64 - 1)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(start_ms, mean)| Point { start_ms, mean })
        .collect())
}

/// Writes `forecasts` once each; a replayed forecast changes nothing.
async fn store(tx: &mut PgConnection, forecasts: &[Forecast]) -> Result<(), sqlx::Error> {
    if forecasts.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Forecast) -> String| forecasts.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO forecasts (forecast_id, series_key, entity, site, service, metric, \
             made_from, target_start, predicted, capacity, breach) \
         SELECT id, series_key, entity, site, service, metric, made_from, \
             to_timestamp(target_ms / 1000.0), predicted, capacity, breach \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::bigint[], $9::float8[], $10::float8[], $11::bool[]) \
             AS f(id, series_key, entity, site, service, metric, made_from, target_ms, \
                  predicted, capacity, breach) \
         ON CONFLICT (forecast_id) DO NOTHING",
    )
    .bind(column(|f| f.forecast_id.clone()))
    .bind(column(|f| f.series_key.clone()))
    .bind(column(|f| f.entity.clone()))
    .bind(column(|f| f.site.clone()))
    .bind(column(|f| f.service.clone()))
    .bind(column(|f| f.metric.clone()))
    .bind(column(|f| f.made_from.clone()))
    .bind(
        forecasts
            .iter()
            .map(|f| f.target_start_ms)
            .collect::<Vec<_>>(),
    )
    .bind(forecasts.iter().map(|f| f.predicted).collect::<Vec<_>>())
    .bind(forecasts.iter().map(|f| f.capacity).collect::<Vec<_>>())
    .bind(forecasts.iter().map(|f| f.breach).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

type ForecastRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    f64,
    Option<f64>,
    bool,
);

/// Breaching forecasts not yet acknowledged by the broker, in the order of
/// the windows they were made from, then of their targets: the same order
/// for a series whatever the batch boundaries, which the alert manager's
/// suppression depends on.
async fn unpublished_breaches(tx: &mut PgConnection) -> Result<Vec<Forecast>, sqlx::Error> {
    let rows: Vec<ForecastRow> = sqlx::query_as(
        "SELECT f.forecast_id, f.series_key, f.entity, f.site, f.service, f.metric, f.made_from, \
             round(extract(epoch FROM f.target_start) * 1000)::bigint, f.predicted, f.capacity, \
             f.breach \
         FROM forecasts f JOIN kpi_windows w ON w.window_id = f.made_from \
         WHERE f.breach AND NOT f.published \
         ORDER BY w.window_start, f.made_from, f.target_start",
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Forecast {
            forecast_id: r.0,
            series_key: r.1,
            entity: r.2,
            site: r.3,
            service: r.4,
            metric: r.5,
            made_from: r.6,
            target_start_ms: r.7,
            predicted: r.8,
            capacity: r.9,
            breach: r.10,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MINUTE_MS: i64 = 60_000;

    fn window(entity: &str, metric: &str, index: i64) -> KpiWindow {
        let start = index * MINUTE_MS;
        KpiWindow {
            window_id: KpiWindow::id_for(entity, metric, start),
            entity: entity.into(),
            site: "lon".into(),
            service: "search".into(),
            metric: metric.into(),
            window_start_ms: start,
            window_end_ms: start + MINUTE_MS,
            count: 6,
            mean: 0.0,
            min: 0.0,
            max: 0.0,
            p95: 0.0,
            error_rate: 0.0,
        }
    }

    fn rising(windows: i64) -> Vec<Point> {
        (0..windows)
            .map(|i| Point {
                start_ms: i * MINUTE_MS,
                mean: 80.5 + i as f64,
            })
            .collect()
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|key| env.get(key).cloned())
    }

    #[test]
    fn the_defaults_forecast_five_windows_from_ten_to_thirty() {
        let settings = Settings::default();
        assert_eq!((settings.history, settings.min_history), (30, 10));
        assert_eq!((settings.horizon, settings.season_s), (5, 86_400));
        assert_eq!(settings.capacity("cpu"), Some(90.0));
        assert_eq!(settings.capacity("latency"), Some(250.0));
        assert_eq!(settings.capacity("memory"), None);
    }

    #[test]
    fn a_minimum_above_the_history_is_rejected_by_name() {
        let err =
            settings(&[("FORECAST_HISTORY", "12"), ("FORECAST_MIN_HISTORY", "20")]).unwrap_err();
        assert_eq!(err.variable, "FORECAST_MIN_HISTORY");
    }

    #[test]
    fn a_capacity_must_be_a_positive_number() {
        assert_eq!(
            settings(&[("FORECAST_CAPACITY_MEMORY", "8e9")])
                .unwrap()
                .capacity("memory"),
            Some(8e9)
        );
        for bad in ["-1", "lots", "NaN"] {
            let err = settings(&[("FORECAST_CAPACITY_CPU", bad)]).unwrap_err();
            assert_eq!(err.variable, "FORECAST_CAPACITY_CPU", "{bad}");
        }
    }

    #[test]
    fn the_history_stops_at_the_window_and_keeps_the_newest() {
        let stored = rising(40);
        let history = history_until(&stored, 20 * MINUTE_MS, 30);
        assert_eq!(history.len(), 21);
        let history = history_until(&stored, 35 * MINUTE_MS, 30);
        assert_eq!(history.len(), 30);
        assert_eq!(history[0].start_ms, 6 * MINUTE_MS);
        assert_eq!(history[29].start_ms, 35 * MINUTE_MS);
    }

    #[test]
    fn a_window_with_too_little_history_gives_no_forecast() {
        let forecaster = Forecaster::new(Settings::default());
        let stored = rising(40);
        assert!(forecaster
            .forecasts_of(&window("a", "cpu", 8), &stored)
            .is_empty());
        assert_eq!(
            forecaster
                .forecasts_of(&window("a", "cpu", 9), &stored)
                .len(),
            5
        );
    }

    #[test]
    fn a_prediction_at_the_capacity_is_a_breach() {
        // Means 80.5 + i: made from window 5, the targets 6..=10 are
        // predicted 86.5..=90.5, and only 90.5 reaches the cpu capacity.
        let forecaster = Forecaster::new(Settings {
            min_history: 5,
            ..Settings::default()
        });
        let forecasts = forecaster.forecasts_of(&window("a", "cpu", 5), &rising(40));
        let breaches: Vec<bool> = forecasts.iter().map(|f| f.breach).collect();
        assert_eq!(
            breaches,
            vec![false, false, false, false, true],
            "{forecasts:?}"
        );
        let last = &forecasts[4];
        assert_eq!(
            last.forecast_id,
            format!("a|cpu|{}|{}", 5 * MINUTE_MS, 10 * MINUTE_MS)
        );
        assert_eq!(last.made_from, format!("a|cpu|{}", 5 * MINUTE_MS));
        assert_eq!(last.capacity, Some(90.0));
        assert!((last.predicted - 90.5).abs() < 1e-9);
    }

    #[test]
    fn a_metric_without_capacity_never_breaches() {
        let forecaster = Forecaster::new(Settings::default());
        let forecasts = forecaster.forecasts_of(&window("a", "requests", 30), &rising(40));
        assert_eq!(forecasts.len(), 5);
        assert!(forecasts.iter().all(|f| !f.breach && f.capacity.is_none()));
    }

    #[test]
    fn a_window_missing_from_the_table_gives_no_forecast() {
        let forecaster = Forecaster::new(Settings::default());
        let mut stored = rising(40);
        stored.retain(|p| p.start_ms != 20 * MINUTE_MS);
        assert!(forecaster
            .forecasts_of(&window("a", "cpu", 20), &stored)
            .is_empty());
    }

    #[test]
    fn replayed_windows_of_a_batch_are_forecast_once_in_order() {
        let events = vec![
            window("a", "cpu", 12),
            window("a", "cpu", 11),
            window("a", "cpu", 12),
            window("b", "cpu", 11),
        ];
        let series = by_series(events);
        let a: Vec<i64> = series[&("a".into(), "cpu".into())]
            .iter()
            .map(|w| w.window_start_ms / MINUTE_MS)
            .collect();
        assert_eq!(a, vec![11, 12]);
        assert_eq!(series.len(), 2);
    }
}
