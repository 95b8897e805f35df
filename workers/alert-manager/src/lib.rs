//! alert-manager: turns anomalies (`anomalies`) and breaching capacity
//! forecasts (`forecasts`) into alerts, decides which of them page people,
//! stores every alert in `alerts`, publishes it on `alerts` (keyed by
//! `site|service`, for the incident correlator) and publishes a
//! [`Notification`] on `alerts.notifications` (keyed by entity) for each
//! notified one.
//!
//! # Rules
//!
//! - **Severity**: an anomaly is `critical` when `|score| >=
//!   ALERT_CRITICAL_SCORE` (default 8.0), else `warning`; a capacity
//!   forecast is `warning`, and `critical` when `predicted >= capacity *
//!   ALERT_CAPACITY_CRITICAL_FACTOR` (default 1.2).
//! - **Deduplication**: `alert_id = kind|source_id` (the anomaly's window id
//!   or the forecast's id). A replayed or doubled source finds its id stored
//!   and raises, stores and notifies nothing new.
//! - **Key**: every other rule looks only at alerts of the same (kind,
//!   entity, metric), in the order they were decided (their `seq`). Time is
//!   event time: `raised_at` is the anomaly's window start or the
//!   forecast's target window start. Distances are absolute, `|a - b| <
//!   span`, so a forecast of an earlier target arriving after a later one
//!   is judged the same way.
//! - **Suppression**: an alert within `ALERT_SUPPRESS_S` (default 600) of an
//!   earlier alert of its key that opened an episode (one notified or held
//!   as flapping) repeats that episode: stored as `suppressed`, published,
//!   not notified.
//! - **Flap damping**: an alert that is not suppressed opens an episode. It
//!   is held as `flapping` (stored, published, not notified) when the key's
//!   openings within `ALERT_FLAP_WINDOW_S` (default 3600) of it, itself
//!   included, number at least `ALERT_FLAP_COUNT` (default 3), or when a
//!   held opening of the key lies within `ALERT_FLAP_QUIET_S` (default
//!   1800) of it: a flapping key has to be quiet that long before it pages
//!   again. Otherwise it is `notified`, and its notification carries how
//!   many openings were held since the key's previous notification.
//!
//! # Crash safety
//!
//! Each key is decided under a transaction-scoped advisory lock; alerts are
//! stored with `published = false` and published from that outbox, then
//! marked, so a crash between the commit and the acknowledgement publishes
//! them again (same ids) and never decides them again.
//!
//! # Limits
//!
//! - Decisions depend on the order in which a key's sources arrive. Both
//!   topics are keyed by entity, so a key's sources share one partition,
//!   and the upstream workers publish a series in window order; the result
//!   is then the same on every run. Capacity forecasts of one made-from
//!   window must also arrive in a fixed order (the forecaster's outbox
//!   order).
//! - Held notifications are released by the key's next opening after the
//!   quiet span, not by the passing of time alone: without a new event the
//!   worker cannot tell, in event time, that a key has gone quiet.
//! - Alerts are never resolved: this worker sees sources that fire, not
//!   ones that recover.

pub mod notification;
pub mod rules;
pub mod source;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use fleet_runtime::config::{env_number, ConfigError};
use fleet_runtime::events::{Alert, ALERTS, ALERT_NOTIFICATIONS, ANOMALIES, FORECASTS};
use fleet_runtime::{Outcome, Output, ProcessError, Processor};
use sqlx::{PgConnection, PgPool};
use tracing::{debug, info};

pub use notification::Notification;
use rules::{Rules, State};
use store::{AlertKey, Pending};

/// The worker's name: consumer group, metrics label, log field.
pub const NAME: &str = "alert-manager";

/// Runs the alert manager as this process's worker, with its rules from
/// the environment; returns the exit code.
pub async fn run_process() -> i32 {
    fleet_runtime::run_configured(NAME, AlertManager::from_env()).await
}

/// The alert manager, with its rules.
#[derive(Debug)]
pub struct AlertManager {
    rules: Rules,
    in_flight: Vec<String>,
}

impl AlertManager {
    /// An alert manager applying `rules`.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            in_flight: Vec::new(),
        }
    }

    /// Reads the rules from the environment (see the crate docs).
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self::new(rules_from(&|key: &str| std::env::var(key).ok())?))
    }
}

/// The rules from `lookup`, each variable defaulting to [`Rules::default`].
pub fn rules_from(lookup: &impl Fn(&str) -> Option<String>) -> Result<Rules, ConfigError> {
    let default = Rules::default();
    let seconds = |variable, default: Duration, min| {
        env_number(lookup, variable, default.as_secs(), min..=30 * 86_400).map(Duration::from_secs)
    };
    Ok(Rules {
        critical_score: env_decimal(lookup, "ALERT_CRITICAL_SCORE", default.critical_score)?,
        capacity_critical_factor: env_decimal(
            lookup,
            "ALERT_CAPACITY_CRITICAL_FACTOR",
            default.capacity_critical_factor,
        )?,
        suppress: seconds("ALERT_SUPPRESS_S", default.suppress, 0)?,
        flap_count: env_number(lookup, "ALERT_FLAP_COUNT", default.flap_count, 1..=1000)?,
        flap_window: seconds("ALERT_FLAP_WINDOW_S", default.flap_window, 0)?,
        flap_quiet: seconds("ALERT_FLAP_QUIET_S", default.flap_quiet, 0)?,
    })
}

/// Reads a positive decimal number, `default` when unset, with an error
/// naming the variable otherwise.
fn env_decimal(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: f64,
) -> Result<f64, ConfigError> {
    let Some(text) = lookup(variable) else {
        return Ok(default);
    };
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        _ => Err(ConfigError {
            variable,
            problem: format!("'{text}' is not a positive decimal number"),
        }),
    }
}

impl Processor for AlertManager {
    type Event = Alert;

    fn name(&self) -> &'static str {
        NAME
    }

    fn input_topics(&self) -> Vec<String> {
        vec![ANOMALIES.into(), FORECASTS.into()]
    }

    fn output_topics(&self) -> Vec<String> {
        vec![ALERTS.into(), ALERT_NOTIFICATIONS.into()]
    }

    fn parse(&self, topic: &str, payload: &[u8]) -> Outcome<Alert> {
        match topic {
            ANOMALIES => source::from_anomaly(
                &self.rules,
                serde_json::from_slice(payload).map_err(|e| format!("not an anomaly: {e}"))?,
            ),
            FORECASTS => source::from_forecast(
                &self.rules,
                serde_json::from_slice(payload).map_err(|e| format!("not a forecast: {e}"))?,
            ),
            other => Err(format!("alert-manager does not read topic '{other}'")),
        }
    }

    async fn process(
        &mut self,
        events: Vec<Alert>,
        tx: &mut PgConnection,
    ) -> Result<Vec<Output>, ProcessError> {
        for (key, alerts) in by_key(events) {
            self.decide_key(&key, alerts, tx).await?;
        }
        let pending = store::unpublished(tx).await?;
        self.in_flight = pending.iter().map(|p| p.alert.alert_id.clone()).collect();
        Ok(outputs(&pending))
    }

    async fn published(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        fleet_runtime::db::mark_published(pool, "alerts", "alert_id", &mut self.in_flight).await
    }
}

/// The batch's alerts per key, each key's in arrival order, the first of
/// each id only.
fn by_key(events: Vec<Alert>) -> BTreeMap<AlertKey, Vec<Alert>> {
    let mut seen = HashSet::new();
    let mut keys: BTreeMap<AlertKey, Vec<Alert>> = BTreeMap::new();
    for alert in events {
        if seen.insert(alert.alert_id.clone()) {
            keys.entry(AlertKey::of(&alert)).or_default().push(alert);
        }
    }
    keys
}

/// What publishing `pending` means: every alert on `alerts`, keyed by
/// `site|service`, and a notification, keyed by entity, for each notified one.
fn outputs(pending: &[Pending]) -> Vec<Output> {
    let mut outputs = Vec::with_capacity(pending.len());
    for p in pending {
        let site_service = format!("{}|{}", p.alert.site, p.alert.service);
        outputs.push(Output::json(ALERTS, site_service, &p.alert));
        if p.state == State::Notified {
            let notification = Notification::of(&p.alert, p.held);
            outputs.push(Output::json(
                ALERT_NOTIFICATIONS,
                p.alert.entity.clone(),
                &notification,
            ));
        }
    }
    outputs
}

impl AlertManager {
    /// Decides and stores the new alerts of one key, in arrival order.
    async fn decide_key(
        &self,
        key: &AlertKey,
        alerts: Vec<Alert>,
        tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        store::lock(key, tx).await?;
        let ids: Vec<String> = alerts.iter().map(|a| a.alert_id.clone()).collect();
        let known = store::known(&ids, tx).await?;
        let fresh: Vec<Alert> = alerts
            .into_iter()
            .filter(|a| !known.contains(&a.alert_id))
            .collect();
        debug!(key = %key, replayed = known.len(), fresh = fresh.len(), "deciding alerts");
        let (Some(min_ms), Some(max_ms)) = (
            fresh.iter().map(|a| a.raised_at_ms).min(),
            fresh.iter().map(|a| a.raised_at_ms).max(),
        ) else {
            return Ok(());
        };
        let reach_ms = self.rules.reach().as_millis() as i64;
        let mut loaded = store::load(key, min_ms - reach_ms, max_ms + reach_ms, tx).await?;
        for alert in &fresh {
            let decision = self.rules.decide(&mut loaded.history, alert.raised_at_ms);
            store::insert(alert, decision.state, decision.held, loaded.next_seq, tx).await?;
            info!(
                alert = %alert.alert_id,
                key = %key,
                severity = %alert.severity,
                state = decision.state.as_str(),
                held = decision.held,
                "alert raised"
            );
            loaded.next_seq += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rules(pairs: &[(&str, &str)]) -> Result<Rules, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        rules_from(&|key: &str| env.get(key).cloned())
    }

    #[test]
    fn unset_variables_give_the_default_rules() {
        assert_eq!(rules(&[]).unwrap(), Rules::default());
    }

    #[test]
    fn every_rule_is_read_from_its_variable() {
        let rules = rules(&[
            ("ALERT_CRITICAL_SCORE", "6.5"),
            ("ALERT_CAPACITY_CRITICAL_FACTOR", "1.5"),
            ("ALERT_SUPPRESS_S", "300"),
            ("ALERT_FLAP_COUNT", "4"),
            ("ALERT_FLAP_WINDOW_S", "7200"),
            ("ALERT_FLAP_QUIET_S", "900"),
        ])
        .unwrap();
        assert_eq!(rules.critical_score, 6.5);
        assert_eq!(rules.capacity_critical_factor, 1.5);
        assert_eq!(rules.suppress, Duration::from_secs(300));
        assert_eq!(rules.flap_count, 4);
        assert_eq!(rules.flap_window, Duration::from_secs(7200));
        assert_eq!(rules.flap_quiet, Duration::from_secs(900));
    }

    #[test]
    fn a_bad_decimal_names_its_variable() {
        let err = rules(&[("ALERT_CRITICAL_SCORE", "high")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable ALERT_CRITICAL_SCORE: 'high' is not a positive decimal number"
        );
        let err = rules(&[("ALERT_FLAP_COUNT", "0")]).unwrap_err();
        assert_eq!(err.variable, "ALERT_FLAP_COUNT");
    }

    #[test]
    fn only_notified_alerts_are_notified_and_alerts_are_keyed_by_site_and_service() {
        let pending = |id: &str, state| Pending {
            alert: alert(id, "web-1", 0),
            state,
            held: 2,
        };
        let outputs = outputs(&[
            pending("a", State::Notified),
            pending("b", State::Suppressed),
            pending("c", State::Flapping),
        ]);
        let routes: Vec<(&str, &str)> = outputs
            .iter()
            .map(|o| (o.topic.as_str(), o.key.as_str()))
            .collect();
        assert_eq!(
            routes,
            vec![
                (ALERTS, "lon|web"),
                (ALERT_NOTIFICATIONS, "web-1"),
                (ALERTS, "lon|web"),
                (ALERTS, "lon|web"),
            ]
        );
        let notification: Notification = serde_json::from_slice(&outputs[1].payload).unwrap();
        assert_eq!(notification.notification_id, "a");
        assert_eq!(notification.held_while_flapping, 2);
    }

    fn alert(id: &str, entity: &str, at: i64) -> Alert {
        Alert {
            alert_id: id.into(),
            source_id: id.into(),
            kind: "anomaly".into(),
            entity: entity.into(),
            site: "lon".into(),
            service: "web".into(),
            metric: "latency".into(),
            severity: "warning".into(),
            raised_at_ms: at,
            summary: String::new(),
        }
    }

    #[test]
    fn a_batch_keeps_the_first_of_each_id_in_arrival_order_per_key() {
        let keys = by_key(vec![
            alert("b", "web-2", 5),
            alert("a", "web-1", 9),
            alert("c", "web-1", 3),
            alert("a", "web-1", 9),
        ]);
        let order: Vec<Vec<&str>> = keys
            .values()
            .map(|v| v.iter().map(|a| a.alert_id.as_str()).collect())
            .collect();
        assert_eq!(order, vec![vec!["a", "c"], vec!["b"]]);
    }
}
