//! The events on the fleet's topics, as JSON. Every event carries the id
//! its consumers key their writes by, so a replayed event overwrites
//! nothing and adds nothing.

use serde::{Deserialize, Serialize};

/// Topic of raw telemetry, as devices and agents send it.
pub const TELEMETRY_RAW: &str = "telemetry.raw";
/// Topic of validated telemetry in canonical units.
pub const TELEMETRY_NORMALIZED: &str = "telemetry.normalized";
/// Topic of closed KPI windows.
pub const KPI_WINDOWS: &str = "kpi.windows";
/// Topic of detected anomalies.
pub const ANOMALIES: &str = "anomalies";
/// Topic of forecasts that predict a capacity breach.
pub const FORECASTS: &str = "forecasts";
/// Topic of raised alerts.
pub const ALERTS: &str = "alerts";
/// Topic of alert notifications for people.
pub const ALERT_NOTIFICATIONS: &str = "alerts.notifications";

/// One raw measurement from an agent, in whatever unit the agent uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// Unique id of the measurement, set by the agent.
    pub event_id: String,
    /// Event time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Host or instance measured.
    pub entity: String,
    /// Data centre or region of the entity.
    pub site: String,
    /// Service the entity belongs to.
    pub service: String,
    /// What was measured: `latency`, `cpu`, `memory`, `requests`.
    pub metric: String,
    /// The measured value, in `unit`.
    pub value: f64,
    /// Unit of `value`: `ms`, `s`, `us`, `percent`, `ratio`, `bytes`, `KiB`, `MiB`, `count`.
    pub unit: String,
    /// Whether the measured operation failed.
    #[serde(default)]
    pub error: bool,
}

/// A validated measurement in the canonical unit of its metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The raw event's id.
    pub event_id: String,
    /// Event time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Host or instance measured.
    pub entity: String,
    /// Data centre or region.
    pub site: String,
    /// Service.
    pub service: String,
    /// Metric name.
    pub metric: String,
    /// Value in `unit`.
    pub value: f64,
    /// Canonical unit: `ms`, `percent`, `bytes` or `count`.
    pub unit: String,
    /// Whether the measured operation failed.
    pub error: bool,
}

/// Aggregates of one metric of one entity over one event-time window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiWindow {
    /// `entity|metric|window_start_ms`: the same window always has the same id.
    pub window_id: String,
    /// Host or instance.
    pub entity: String,
    /// Data centre or region.
    pub site: String,
    /// Service.
    pub service: String,
    /// Metric name.
    pub metric: String,
    /// Window start, inclusive, ms since the epoch.
    pub window_start_ms: i64,
    /// Window end, exclusive, ms since the epoch.
    pub window_end_ms: i64,
    /// Measurements in the window.
    pub count: i64,
    /// Mean value.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
    /// Share of measurements flagged as errors.
    pub error_rate: f64,
}

impl KpiWindow {
    /// The id of the window of `entity` and `metric` starting at `start_ms`.
    pub fn id_for(entity: &str, metric: &str, start_ms: i64) -> String {
        format!("{entity}|{metric}|{start_ms}")
    }

    /// The series this window belongs to: `entity|metric`.
    pub fn series_key(&self) -> String {
        format!("{}|{}", self.entity, self.metric)
    }

    /// Parses a `kpi.windows` payload and checks it with [`Self::validate`];
    /// the error is the dead-letter reason.
    pub fn from_payload(payload: &[u8]) -> Result<Self, String> {
        let window: KpiWindow =
            serde_json::from_slice(payload).map_err(|e| format!("not a KPI window: {e}"))?;
        window.validate()?;
        Ok(window)
    }

    /// Checks what every window the KPI worker closes holds and the JSON
    /// types cannot say: the id matches the series and start, the window
    /// ends after it starts, counts at least one measurement, has a finite
    /// mean and an error rate within 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        let id = Self::id_for(&self.entity, &self.metric, self.window_start_ms);
        let problem = if self.window_id != id {
            format!("has an id that is not '{id}'")
        } else if self.window_end_ms <= self.window_start_ms {
            "ends before it starts".to_string()
        } else if self.count < 1 {
            "counts no measurement".to_string()
        } else if !self.mean.is_finite() {
            format!("has a mean of {}", self.mean)
        } else if !(0.0..=1.0).contains(&self.error_rate) {
            format!("has an error rate of {} outside 0..=1", self.error_rate)
        } else {
            return Ok(());
        };
        Err(format!("KPI window '{}' {problem}", self.window_id))
    }
}

/// A KPI window that scored as anomalous, on the `anomalies` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The scored window's id: the same window always gives the same anomaly.
    pub window_id: String,
    /// `entity|metric`.
    pub series_key: String,
    /// Host or instance.
    pub entity: String,
    /// Data centre or region.
    pub site: String,
    /// Service.
    pub service: String,
    /// Metric name.
    pub metric: String,
    /// Window start, ms since the epoch.
    pub window_start_ms: i64,
    /// The window's scored value (its mean).
    pub value: f64,
    /// What the series' model or history expected.
    pub expected: f64,
    /// Distance from the expectation in robust standard deviations.
    pub score: f64,
    /// `model` (a trained model) or `robust-z` (history, before a model exists).
    pub method: String,
    /// Version of the model used, when `method` is `model`.
    pub model_version: Option<i32>,
}

/// A forecast of one series' coming window, on the `forecasts` topic when it
/// breaches the metric's capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// `made_from|target_start_ms`: the same forecast always has the same id.
    pub forecast_id: String,
    /// `entity|metric`.
    pub series_key: String,
    /// Host or instance.
    pub entity: String,
    /// Data centre or region.
    pub site: String,
    /// Service.
    pub service: String,
    /// Metric name.
    pub metric: String,
    /// The window the forecast was made from (the newest one seen).
    pub made_from: String,
    /// Start of the predicted window, ms since the epoch.
    pub target_start_ms: i64,
    /// Predicted value.
    pub predicted: f64,
    /// The metric's capacity, where it has one.
    pub capacity: Option<f64>,
    /// Whether `predicted` crosses `capacity`.
    pub breach: bool,
}

/// An alert raised by the alert manager, on the `alerts` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `kind|source_id`: the same source always raises the same alert.
    pub alert_id: String,
    /// The anomaly's window id or the forecast's id.
    pub source_id: String,
    /// `anomaly` or `capacity`.
    pub kind: String,
    /// Host or instance.
    pub entity: String,
    /// Data centre or region.
    pub site: String,
    /// Service.
    pub service: String,
    /// Metric name.
    pub metric: String,
    /// `warning` or `critical`.
    pub severity: String,
    /// Event time the alert refers to, ms since the epoch.
    pub raised_at_ms: i64,
    /// One line for people.
    pub summary: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> KpiWindow {
        KpiWindow {
            window_id: KpiWindow::id_for("a", "cpu", 60_000),
            entity: "a".into(),
            site: "s".into(),
            service: "v".into(),
            metric: "cpu".into(),
            window_start_ms: 60_000,
            window_end_ms: 120_000,
            count: 6,
            mean: 1.0,
            min: 0.5,
            max: 1.5,
            p95: 1.4,
            error_rate: 1.0 / 6.0,
        }
    }

    fn reason(window: &KpiWindow) -> String {
        let payload = serde_json::to_vec(window).unwrap();
        KpiWindow::from_payload(&payload).unwrap_err()
    }

    #[test]
    fn a_window_the_kpi_worker_could_have_closed_is_accepted() {
        let payload = serde_json::to_vec(&window()).unwrap();
        assert_eq!(KpiWindow::from_payload(&payload).unwrap(), window());
    }

    #[test]
    fn a_payload_that_is_not_a_window_names_what_it_lacks() {
        let reason = KpiWindow::from_payload(b"{\"window_id\": 1}").unwrap_err();
        assert!(reason.starts_with("not a KPI window"), "{reason}");
    }

    #[test]
    fn each_broken_invariant_is_named_in_the_reason() {
        let mut forged = window();
        forged.window_id = "a|cpu|0".into();
        assert!(reason(&forged).contains("is not 'a|cpu|60000'"));
        let mut backwards = window();
        backwards.window_end_ms = backwards.window_start_ms;
        assert!(reason(&backwards).contains("ends before it starts"));
        let mut empty = window();
        empty.count = 0;
        assert!(reason(&empty).contains("counts no measurement"));
        let mut rate = window();
        rate.error_rate = 1.5;
        assert!(reason(&rate).contains("outside 0..=1"));
    }

    #[test]
    fn a_window_without_a_finite_mean_is_rejected() {
        let mut broken = window();
        broken.mean = f64::INFINITY;
        assert!(broken.validate().unwrap_err().contains("has a mean of inf"));
    }
}
