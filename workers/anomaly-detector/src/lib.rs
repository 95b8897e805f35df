//! anomaly-detector: scores every closed KPI window against its series'
//! trained model, and before a model can exist, against the series' recent
//! history; writes the windows that score at or above the threshold to
//! `anomalies` and publishes them on the `anomalies` topic.
//!
//! Which score a window `W` gets depends only on stored, final data, so it
//! is the same whatever the timing, batching or replays:
//! - the model of `W`'s epoch boundary `B` (the newest boundary at or
//!   before `W`'s start, see [`model_trainer::epochs`]), when the series
//!   has at least `MODEL_MIN_WINDOWS` windows in `B`'s training range:
//!   method `model`, version = the epoch number. If the trainer has not
//!   stored it yet, the batch is retried ([`ProcessError::NotReady`]);
//! - otherwise the robust z-score of `W`'s mean against the means of the
//!   series' previous `ANOMALY_HISTORY_WINDOWS` windows: the distance from
//!   their median in standard deviations of the history without its
//!   outliers (beyond 3.5 MADs; the raw MAD of ten windows is too noisy a
//!   scale), method `robust-z`, when there are at least
//!   `ANOMALY_MIN_HISTORY` of them; with fewer the window is not scored.
//!
//! Earlier anomalous windows are not looked up to leave them out of the
//! history: the median and the trimmed spread already ignore a spike, and
//! looking them up would make a window's score depend on the detector's
//! own earlier output. The trainer trims them from its fits the same way.
//!
//! Settings: `ANOMALY_THRESHOLD` (4.0, in robust standard deviations),
//! `ANOMALY_MIN_HISTORY` (10), `ANOMALY_HISTORY_WINDOWS` (60),
//! `ANOMALY_MODEL_WAIT_MS` (30000), and the trainer's epoch settings
//! (`KPI_WINDOW_S`, `MODEL_EPOCH_WINDOWS`, `MODEL_MIN_WINDOWS`,
//! `MODEL_HISTORY_WINDOWS`), which must be the trainer's.
//!
//! Limits: after waiting `ANOMALY_MODEL_WAIT_MS` for the same model (the
//! trainer is down or behind), the detector falls back to the robust
//! z-score and logs a warning; only then does a result depend on timing.
//! A window scored once is never rescored (`ON CONFLICT DO NOTHING`).
//! Anomalies go out through an outbox (the `published` flag), so one
//! stored is published at least once, even across a crash.

pub mod score;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fleet_runtime::config::{env_number, ConfigError};
use fleet_runtime::events::{Anomaly, KpiWindow, ANOMALIES, KPI_WINDOWS};
use fleet_runtime::{Outcome, Output, ProcessError, Processor};
use model_trainer::epochs::Epochs;
use model_trainer::model::SeriesModel;
use score::{against_model, robust_z, Score, METHOD_MODEL, METHOD_ROBUST_Z};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tracing::{debug, warn};

/// The worker's name: consumer group, metrics label, log field.
pub const NAME: &str = "anomaly-detector";

/// Runs the detector as this process's worker, with its settings from the
/// environment; returns the exit code.
pub async fn run_process() -> i32 {
    fleet_runtime::run_configured(NAME, Detector::from_env()).await
}

/// How windows are scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Score from which a window is anomalous (`ANOMALY_THRESHOLD`).
    pub threshold: f64,
    /// Fewest previous windows for a robust z-score (`ANOMALY_MIN_HISTORY`).
    pub min_history: usize,
    /// Previous windows a robust z-score looks at (`ANOMALY_HISTORY_WINDOWS`).
    pub history_windows: usize,
    /// Longest wait for a model before the fallback (`ANOMALY_MODEL_WAIT_MS`).
    pub model_wait: Duration,
    /// The trainer's epochs.
    pub epochs: Epochs,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            threshold: 4.0,
            min_history: 10,
            history_windows: 60,
            model_wait: Duration::from_secs(30),
            epochs: Epochs::default(),
        }
    }
}

impl Settings {
    /// Reads the settings through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let settings = Self {
            threshold: threshold(&lookup)?,
            min_history: env_number(&lookup, "ANOMALY_MIN_HISTORY", 10, 1..=100_000)?,
            history_windows: env_number(&lookup, "ANOMALY_HISTORY_WINDOWS", 60, 1..=100_000)?,
            model_wait: Duration::from_millis(env_number(
                &lookup,
                "ANOMALY_MODEL_WAIT_MS",
                30_000,
                0..=86_400_000,
            )?),
            epochs: Epochs::from_lookup(&lookup)?,
        };
        if settings.min_history > settings.history_windows {
            return Err(ConfigError {
                variable: "ANOMALY_MIN_HISTORY",
                problem: format!(
                    "{} is more than ANOMALY_HISTORY_WINDOWS ({})",
                    settings.min_history, settings.history_windows
                ),
            });
        }
        Ok(settings)
    }
}

/// `ANOMALY_THRESHOLD`: a positive number, default 4.0.
fn threshold(lookup: &impl Fn(&str) -> Option<String>) -> Result<f64, ConfigError> {
    let Some(text) = lookup("ANOMALY_THRESHOLD") else {
        return Ok(4.0);
    };
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        _ => Err(ConfigError {
            variable: "ANOMALY_THRESHOLD",
            problem: format!("'{text}' is not a positive number"),
        }),
    }
}

/// The detector: its settings, the models it has read (a stored model
/// never changes), when it began waiting for each missing one, and the
/// anomalies of the last batch awaiting acknowledgement.
#[derive(Debug)]
pub struct Detector {
    settings: Settings,
    models: HashMap<(String, i32), SeriesModel>,
    waiting_since: HashMap<(String, i32), Instant>,
    in_flight: Vec<String>,
}

impl Detector {
    /// A detector scoring with `settings`.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            models: HashMap::new(),
            waiting_since: HashMap::new(),
            in_flight: Vec::new(),
        }
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self::new(Settings::from_lookup(|key| {
            std::env::var(key).ok()
        })?))
    }
}

impl Processor for Detector {
    type Event = KpiWindow;

    fn name(&self) -> &'static str {
        NAME
    }

    fn input_topics(&self) -> Vec<String> {
        vec![KPI_WINDOWS.into()]
    }

    fn output_topics(&self) -> Vec<String> {
        vec![ANOMALIES.into()]
    }

    fn parse(&self, _topic: &str, payload: &[u8]) -> Outcome<KpiWindow> {
        KpiWindow::from_payload(payload)
    }

    async fn process(
        &mut self,
        events: Vec<KpiWindow>,
        tx: &mut PgConnection,
    ) -> Result<Vec<Output>, ProcessError> {
        for window in &events {
            if let Some(anomaly) = self.judge(window, tx).await? {
                store(&anomaly, tx).await?;
            }
        }
        let pending = unpublished(tx).await?;
        self.in_flight = pending.iter().map(|a| a.window_id.clone()).collect();
        Ok(pending
            .iter()
            .map(|a| Output::json(ANOMALIES, a.entity.clone(), a))
            .collect())
    }

    async fn published(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        fleet_runtime::db::mark_published(pool, "anomalies", "window_id", &mut self.in_flight).await
    }
}

impl Detector {
    /// Scores `window`; returns the anomaly when it reaches the threshold.
    async fn judge(
        &mut self,
        window: &KpiWindow,
        tx: &mut PgConnection,
    ) -> Result<Option<Anomaly>, ProcessError> {
        let (score, method, version) = match self.model_for(window, tx).await? {
            Some((version, model)) => (
                against_model(&model, window.window_start_ms, window.mean),
                METHOD_MODEL,
                Some(version),
            ),
            None => {
                let history = previous_means(window, self.settings.history_windows, tx).await?;
                match robust_z(&history, window.mean, self.settings.min_history) {
                    Some(score) => (score, METHOD_ROBUST_Z, None),
                    None => {
                        debug!(worker = NAME, window = %window.window_id, "too little history to score");
                        return Ok(None);
                    }
                }
            }
        };
        debug!(worker = NAME, window = %window.window_id, method, score = score.score, "scored");
        Ok(score
            .is_anomalous(self.settings.threshold)
            .then(|| anomaly(window, &score, method, version)))
    }

    /// The model `window` is scored with: `None` when its series has too
    /// few windows for one (or the wait for it timed out),
    /// [`ProcessError::NotReady`] while the trainer has yet to store it.
    async fn model_for(
        &mut self,
        window: &KpiWindow,
        tx: &mut PgConnection,
    ) -> Result<Option<(i32, SeriesModel)>, ProcessError> {
        let epochs = self.settings.epochs;
        let boundary = epochs.boundary_at_or_before(window.window_start_ms);
        let version = epochs.version(boundary);
        let key = (window.series_key(), version);
        if let Some(model) = self.models.get(&key) {
            return Ok(Some((version, model.clone())));
        }
        let stored: Option<Json<SeriesModel>> = sqlx::query_scalar(
            "SELECT parameters FROM anomaly_models WHERE series_key = $1 AND version = $2",
        )
        .bind(&key.0)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(Json(model)) = stored {
            self.waiting_since.remove(&key);
            self.models.insert(key, model.clone());
            return Ok(Some((version, model)));
        }
        let (from_ms, to_ms) = epochs.training_range(boundary);
        let windows =
            model_trainer::window_means(&mut *tx, &window.entity, &window.metric, from_ms, to_ms)
                .await?
                .len();
        if !epochs.is_trainable(windows as i64) {
            return Ok(None);
        }
        let since = *self
            .waiting_since
            .entry(key.clone())
            .or_insert_with(Instant::now);
        if since.elapsed() < self.settings.model_wait {
            return Err(ProcessError::NotReady(format!(
                "model version {version} of series {}",
                key.0
            )));
        }
        warn!(
            worker = NAME,
            series = %key.0,
            version,
            waited_ms = since.elapsed().as_millis() as u64,
            window = %window.window_id,
            "no model after the wait; scoring with the robust z-score"
        );
        Ok(None)
    }
}

/// The means of the series' `limit` windows before `window`, newest first.
async fn previous_means(
    window: &KpiWindow,
    limit: usize,
    tx: &mut PgConnection,
) -> Result<Vec<f64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT mean FROM kpi_windows WHERE entity = $1 AND metric = $2 \
         AND window_start < to_timestamp($3 / 1000.0) ORDER BY window_start DESC LIMIT $4",
    )
    .bind(&window.entity)
    .bind(&window.metric)
    .bind(window.window_start_ms)
    .bind(limit as i64)
    .fetch_all(&mut *tx)
    .await
}

/// The anomaly event of `window` scored `score`.
fn anomaly(window: &KpiWindow, score: &Score, method: &str, version: Option<i32>) -> Anomaly {
    Anomaly {
        window_id: window.window_id.clone(),
        series_key: window.series_key(),
        entity: window.entity.clone(),
        site: window.site.clone(),
        service: window.service.clone(),
        metric: window.metric.clone(),
        window_start_ms: window.window_start_ms,
        value: window.mean,
        expected: score.expected,
        score: score.score,
        method: method.to_string(),
        model_version: version,
    }
}

/// Stores `anomaly` unless its window already has one.
async fn store(anomaly: &Anomaly, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO anomalies (window_id, series_key, entity, site, service, metric, \
             window_start, value, expected, score, method, model_version) \
         VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7 / 1000.0), $8, $9, $10, $11, $12) \
         ON CONFLICT (window_id) DO NOTHING",
    )
    .bind(&anomaly.window_id)
    .bind(&anomaly.series_key)
    .bind(&anomaly.entity)
    .bind(&anomaly.site)
    .bind(&anomaly.service)
    .bind(&anomaly.metric)
    .bind(anomaly.window_start_ms)
    .bind(anomaly.value)
    .bind(anomaly.expected)
    .bind(anomaly.score)
    .bind(&anomaly.method)
    .bind(anomaly.model_version)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

type AnomalyRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    f64,
    f64,
    f64,
    String,
    Option<i32>,
);

/// Stored anomalies not yet acknowledged by the broker, oldest first.
async fn unpublished(tx: &mut PgConnection) -> Result<Vec<Anomaly>, sqlx::Error> {
    let rows: Vec<AnomalyRow> = sqlx::query_as(
        "SELECT window_id, series_key, entity, site, service, metric, \
             round(extract(epoch FROM window_start) * 1000)::bigint, \
             value, expected, score, method, model_version \
         FROM anomalies WHERE NOT published ORDER BY window_start, window_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Anomaly {
            window_id: r.0,
            series_key: r.1,
            entity: r.2,
            site: r.3,
            service: r.4,
            metric: r.5,
            window_start_ms: r.6,
            value: r.7,
            expected: r.8,
            score: r.9,
            method: r.10,
            model_version: r.11,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|key| env.get(key).cloned())
    }

    #[test]
    fn no_variable_gives_the_documented_defaults() {
        assert_eq!(settings(&[]).unwrap(), Settings::default());
    }

    #[test]
    fn a_threshold_that_is_not_a_positive_number_is_named() {
        let err = settings(&[("ANOMALY_THRESHOLD", "-1")]).unwrap_err();
        assert_eq!(err.variable, "ANOMALY_THRESHOLD");
        assert_eq!(
            settings(&[("ANOMALY_THRESHOLD", "3.5")]).unwrap().threshold,
            3.5
        );
    }

    #[test]
    fn a_minimum_history_longer_than_the_history_is_rejected() {
        let err = settings(&[("ANOMALY_MIN_HISTORY", "80")]).unwrap_err();
        assert_eq!(err.variable, "ANOMALY_MIN_HISTORY");
    }

    #[test]
    fn a_window_without_a_mean_or_ending_before_it_starts_is_dead_lettered() {
        let detector = Detector::new(Settings::default());
        let window = serde_json::json!({
            "window_id": "a|cpu|0", "entity": "a", "site": "s", "service": "v",
            "metric": "cpu", "window_start_ms": 0, "window_end_ms": 60000, "count": 0,
            "mean": null, "min": 0.0, "max": 0.0, "p95": 0.0, "error_rate": 0.0
        });
        let reason = detector
            .parse(KPI_WINDOWS, window.to_string().as_bytes())
            .unwrap_err();
        assert!(reason.contains("not a KPI window"), "{reason}");
        assert!(detector.parse(KPI_WINDOWS, b"{}").is_err());
        let mut inverted = window;
        inverted["mean"] = 1.0.into();
        inverted["window_end_ms"] = 0.into();
        let reason = detector
            .parse(KPI_WINDOWS, inverted.to_string().as_bytes())
            .unwrap_err();
        assert!(reason.contains("ends before it starts"), "{reason}");
    }
}
