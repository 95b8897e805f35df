//! model-trainer: fits one model per KPI series and epoch boundary, with
//! linfa, and stores it versioned in `anomaly_models` for the anomaly
//! detector.
//!
//! Every tick, for each series of `kpi_progress` and each epoch boundary
//! `B` (see [`epochs`]) whose windows are all closed (`closed_until_ms >=
//! B`) and that has no model yet, the trainer reads the series' windows
//! starting in `[B - MODEL_HISTORY_WINDOWS windows, B)`; with at least
//! `MODEL_MIN_WINDOWS` of them it fits a [`model::SeriesModel`] and stores
//! it with `version` = the epoch number of `B` and `trained_at` = `B`
//! (event time, never the wall clock). Closed windows never change, so the
//! model of a boundary is the same whenever and however often it is
//! trained; the insert is `ON CONFLICT DO NOTHING`, one statement (one
//! transaction) per model, so a crash mid-tick loses nothing the next tick
//! does not redo.
//!
//! Settings: `KPI_WINDOW_S` (60), `MODEL_EPOCH_WINDOWS` (20),
//! `MODEL_MIN_WINDOWS` (15), `MODEL_HISTORY_WINDOWS` (1440), which the
//! detector must be given alike, and the periodic runtime's
//! `TICK_INTERVAL_MS`. Limits: a tick trains every missing boundary of
//! every series, so a fresh trainer over a long history does a long first
//! tick; the trend is linear over the history, so a history much longer
//! than the epoch smooths over a recent change of slope.

pub mod epochs;
pub mod model;
pub mod robust;

use std::collections::HashSet;

use epochs::Epochs;
use fleet_runtime::config::ConfigError;
use fleet_runtime::Task;
use sqlx::types::Json;
use sqlx::PgPool;
use tracing::{debug, info};

/// The worker's name: metrics label, log field.
pub const NAME: &str = "model-trainer";

/// Runs the trainer as this process's worker, with its settings from the
/// environment; returns the exit code.
pub async fn run_process() -> i32 {
    fleet_runtime::run_periodic_configured(NAME, Trainer::from_env()).await
}

/// The trainer, with its epoch settings.
#[derive(Debug, Clone)]
pub struct Trainer {
    epochs: Epochs,
}

impl Trainer {
    /// A trainer of models at the boundaries of `epochs`.
    pub fn new(epochs: Epochs) -> Self {
        Self { epochs }
    }

    /// Reads the epoch settings from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self::new(Epochs::from_env()?))
    }
}

impl Task for Trainer {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn tick(&mut self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        let progress: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT entity, metric, closed_until_ms FROM kpi_progress ORDER BY entity, metric",
        )
        .fetch_all(pool)
        .await?;
        let mut trained = 0;
        for (entity, metric, closed_until_ms) in progress {
            trained += self
                .train_series(pool, &entity, &metric, closed_until_ms)
                .await?;
        }
        Ok(trained)
    }
}

impl Trainer {
    /// Trains the missing models of one series; returns how many it stored.
    async fn train_series(
        &self,
        pool: &PgPool,
        entity: &str,
        metric: &str,
        closed_until_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let series_key = format!("{entity}|{metric}");
        let first: Option<i64> = sqlx::query_scalar(
            "SELECT round(extract(epoch FROM min(window_start)) * 1000)::bigint \
             FROM kpi_windows WHERE entity = $1 AND metric = $2",
        )
        .bind(entity)
        .bind(metric)
        .fetch_one(pool)
        .await?;
        let Some(first) = first else {
            return Ok(0);
        };
        let stored: HashSet<i32> =
            sqlx::query_scalar("SELECT version FROM anomaly_models WHERE series_key = $1")
                .bind(&series_key)
                .fetch_all(pool)
                .await?
                .into_iter()
                .collect();
        let mut trained = 0;
        for boundary in self.epochs.closed_boundaries(first, closed_until_ms) {
            if stored.contains(&self.epochs.version(boundary)) {
                continue;
            }
            trained += self
                .train_boundary(pool, entity, metric, &series_key, boundary)
                .await?;
        }
        Ok(trained)
    }

    /// Fits and stores the model of one series at `boundary_ms`, if the
    /// series has enough windows before it; returns 1 if a row was added.
    async fn train_boundary(
        &self,
        pool: &PgPool,
        entity: &str,
        metric: &str,
        series_key: &str,
        boundary_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let (from_ms, to_ms) = self.epochs.training_range(boundary_ms);
        let points = window_means(pool, entity, metric, from_ms, to_ms).await?;
        let version = self.epochs.version(boundary_ms);
        if !self.epochs.is_trainable(points.len() as i64) {
            debug!(
                worker = NAME,
                series = series_key,
                version,
                windows = points.len(),
                "too few windows to train"
            );
            return Ok(0);
        }
        let model = model::fit(&points, boundary_ms);
        let added = sqlx::query(
            "INSERT INTO anomaly_models (series_key, version, trained_at, sample_count, parameters) \
             VALUES ($1, $2, to_timestamp($3 / 1000.0), $4, $5) \
             ON CONFLICT (series_key, version) DO NOTHING",
        )
        .bind(series_key)
        .bind(version)
        .bind(boundary_ms)
        .bind(points.len() as i64)
        .bind(Json(&model))
        .execute(pool)
        .await?
        .rows_affected();
        info!(
            worker = NAME,
            series = series_key,
            version,
            kind = ?model.kind,
            fitted = model.fitted,
            trimmed = model.trimmed,
            residual_scale = model.residual_scale,
            "model trained"
        );
        Ok(added)
    }
}

/// Start (ms) and mean of the series' windows starting in `[from_ms,
/// to_ms)`, oldest first.
pub async fn window_means<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    entity: &str,
    metric: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT round(extract(epoch FROM window_start) * 1000)::bigint, mean FROM kpi_windows \
         WHERE entity = $1 AND metric = $2 \
         AND window_start >= to_timestamp($3 / 1000.0) AND window_start < to_timestamp($4 / 1000.0) \
         ORDER BY window_start",
    )
    .bind(entity)
    .bind(metric)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(executor)
    .await
}
