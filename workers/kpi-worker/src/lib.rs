//! kpi-worker: event-time tumbling windows per entity and metric (count,
//! mean, min, max, p95, error rate), with an allowed lateness.
//!
//! The window contents come from `measurements`, which the ingestor commits
//! before it publishes an event, so every window is computed from exactly
//! the stored, deduplicated events and a replayed or doubled event changes
//! nothing. The events of `telemetry.normalized` drive time forward: each
//! series' progress (latest event time, end of the last closed window) is
//! kept in `kpi_progress` and advanced in the same transaction that writes
//! the windows it closes. Closed windows are published from an outbox (the
//! `published` flag of `kpi_windows`). Events later than the lateness are
//! stored by the ingestor but not counted: their window is already closed.

pub mod windows;

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_runtime::config::{env_number, ConfigError};
use fleet_runtime::events::{KpiWindow, Measurement, KPI_WINDOWS, TELEMETRY_NORMALIZED};
use fleet_runtime::{Outcome, Output, ProcessError, Processor};
use sqlx::{PgConnection, PgPool};
use windows::{advance, Progress};

/// The worker's name: consumer group, metrics label, log field.
pub const NAME: &str = "kpi-worker";

/// Runs the KPI worker as this process's worker, with its window settings
/// from the environment; returns the exit code.
pub async fn run_process() -> i32 {
    fleet_runtime::run_configured(NAME, KpiWorker::from_env()).await
}

/// The KPI worker, with its window length and allowed lateness.
#[derive(Debug)]
pub struct KpiWorker {
    window_ms: i64,
    lateness_ms: i64,
    in_flight: Vec<String>,
}

impl KpiWorker {
    /// Windows of `window`, accepting events up to `lateness` late.
    pub fn new(window: Duration, lateness: Duration) -> Self {
        Self {
            window_ms: window.as_millis() as i64,
            lateness_ms: lateness.as_millis() as i64,
            in_flight: Vec::new(),
        }
    }

    /// Reads `KPI_WINDOW_S` (default 60) and `KPI_LATENESS_S` (default 60).
    pub fn from_env() -> Result<Self, ConfigError> {
        let lookup = |key: &str| std::env::var(key).ok();
        let window_s: u64 = env_number(&lookup, "KPI_WINDOW_S", 60, 1..=86_400)?;
        let lateness_s: u64 = env_number(&lookup, "KPI_LATENESS_S", 60, 0..=86_400)?;
        Ok(Self::new(
            Duration::from_secs(window_s),
            Duration::from_secs(lateness_s),
        ))
    }
}

impl Processor for KpiWorker {
    type Event = Measurement;

    fn name(&self) -> &'static str {
        NAME
    }

    fn input_topics(&self) -> Vec<String> {
        vec![TELEMETRY_NORMALIZED.into()]
    }

    fn output_topics(&self) -> Vec<String> {
        vec![KPI_WINDOWS.into()]
    }

    fn parse(&self, _topic: &str, payload: &[u8]) -> Outcome<Measurement> {
        serde_json::from_slice(payload).map_err(|e| format!("not a normalized measurement: {e}"))
    }

    async fn process(
        &mut self,
        events: Vec<Measurement>,
        tx: &mut PgConnection,
    ) -> Result<Vec<Output>, ProcessError> {
        for ((entity, metric), (min_ms, max_ms)) in spans(&events) {
            self.advance_series(&entity, &metric, min_ms, max_ms, tx)
                .await?;
        }
        let closed = unpublished(tx).await?;
        self.in_flight = closed.iter().map(|w| w.window_id.clone()).collect();
        Ok(closed
            .iter()
            .map(|w| Output::json(KPI_WINDOWS, w.entity.clone(), w))
            .collect())
    }

    async fn published(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        fleet_runtime::db::mark_published(pool, "kpi_windows", "window_id", &mut self.in_flight)
            .await
    }
}

/// Earliest and latest event time of each series in the batch.
fn spans(events: &[Measurement]) -> BTreeMap<(String, String), (i64, i64)> {
    let mut spans: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for event in events {
        let span = spans
            .entry((event.entity.clone(), event.metric.clone()))
            .or_insert((event.ts_ms, event.ts_ms));
        span.0 = span.0.min(event.ts_ms);
        span.1 = span.1.max(event.ts_ms);
    }
    spans
}

impl KpiWorker {
    /// Moves one series forward and writes the windows that close.
    async fn advance_series(
        &self,
        entity: &str,
        metric: &str,
        min_ms: i64,
        max_ms: i64,
        tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        let stored: Option<(i64, i64)> = sqlx::query_as(
            "SELECT max_event_ms, closed_until_ms FROM kpi_progress \
             WHERE entity = $1 AND metric = $2 FOR UPDATE",
        )
        .bind(entity)
        .bind(metric)
        .fetch_optional(&mut *tx)
        .await?;
        let previous = stored.map(|(max_event_ms, closed_until_ms)| Progress {
            max_event_ms,
            closed_until_ms,
        });
        let (next, range) = advance(previous, min_ms, max_ms, self.window_ms, self.lateness_ms);
        sqlx::query(
            "INSERT INTO kpi_progress (entity, metric, max_event_ms, closed_until_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (entity, metric) DO UPDATE \
             SET max_event_ms = EXCLUDED.max_event_ms, closed_until_ms = EXCLUDED.closed_until_ms",
        )
        .bind(entity)
        .bind(metric)
        .bind(next.max_event_ms)
        .bind(next.closed_until_ms)
        .execute(&mut *tx)
        .await?;
        if let Some((from_ms, to_ms)) = range {
            close_windows(entity, metric, from_ms, to_ms, self.window_ms, tx).await?;
        }
        Ok(())
    }
}

/// Aggregates the stored measurements of `[from_ms, to_ms)` into windows.
async fn close_windows(
    entity: &str,
    metric: &str,
    from_ms: i64,
    to_ms: i64,
    window_ms: i64,
    tx: &mut PgConnection,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO kpi_windows (window_id, entity, site, service, metric, window_start, \
             window_end, count, mean, min, max, p95, error_rate) \
         SELECT $1 || '|' || $2 || '|' || ws, $1, min(site), min(service), $2, \
             to_timestamp(ws / 1000.0), to_timestamp((ws + $3) / 1000.0), count(*), avg(value), \
             min(value), max(value), percentile_disc(0.95) WITHIN GROUP (ORDER BY value), \
             avg(CASE WHEN is_error THEN 1.0 ELSE 0.0 END) \
         FROM (SELECT *, (round(extract(epoch FROM event_time) * 1000)::bigint / $3) * $3 AS ws \
               FROM measurements WHERE entity = $1 AND metric = $2 \
               AND event_time >= to_timestamp($4 / 1000.0) \
               AND event_time < to_timestamp($5 / 1000.0)) m \
         GROUP BY ws \
         ON CONFLICT (window_id) DO NOTHING",
    )
    .bind(entity)
    .bind(metric)
    .bind(window_ms)
    .bind(from_ms)
    .bind(to_ms)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

type WindowRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    f64,
    f64,
    f64,
    f64,
    f64,
);

/// Closed windows not yet acknowledged by the broker, oldest first.
async fn unpublished(tx: &mut PgConnection) -> Result<Vec<KpiWindow>, sqlx::Error> {
    let rows: Vec<WindowRow> = sqlx::query_as(
        "SELECT window_id, entity, site, service, metric, \
             round(extract(epoch FROM window_start) * 1000)::bigint, \
             round(extract(epoch FROM window_end) * 1000)::bigint, \
             count, mean, min, max, p95, error_rate \
         FROM kpi_windows WHERE NOT published ORDER BY window_start, window_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| KpiWindow {
            window_id: r.0,
            entity: r.1,
            site: r.2,
            service: r.3,
            metric: r.4,
            window_start_ms: r.5,
            window_end_ms: r.6,
            count: r.7,
            mean: r.8,
            min: r.9,
            max: r.10,
            p95: r.11,
            error_rate: r.12,
        })
        .collect())
}
