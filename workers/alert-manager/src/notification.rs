//! The event people are paged with, on `alerts.notifications`: one per
//! notified alert, never one for a suppressed or flapping alert.

use fleet_runtime::events::Alert;
use serde::{Deserialize, Serialize};

/// A notification of one alert, keyed by entity on `alerts.notifications`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The alert's id: an alert is notified at most once, so a replayed
    /// notification carries the same id and receivers can drop it.
    pub notification_id: String,
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
    /// Episodes of the same kind, entity and metric held back as flapping
    /// since the previous notification of that key.
    pub held_while_flapping: i64,
}

impl Notification {
    /// The notification of `alert`, after `held` held flapping episodes.
    pub fn of(alert: &Alert, held: i64) -> Self {
        Self {
            notification_id: alert.alert_id.clone(),
            kind: alert.kind.clone(),
            entity: alert.entity.clone(),
            site: alert.site.clone(),
            service: alert.service.clone(),
            metric: alert.metric.clone(),
            severity: alert.severity.clone(),
            raised_at_ms: alert.raised_at_ms,
            summary: alert.summary.clone(),
            held_while_flapping: held,
        }
    }
}
