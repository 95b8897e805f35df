//! incident-correlator: groups the alerts of `alerts` into incidents by
//! topology (site and service) and time, into `incidents` and
//! `incident_alerts`.
//!
//! # Rule
//!
//! Alerts of one site and service, sorted by event time (`raised_at`), form
//! one incident as long as each is raised within `INCIDENT_GAP_S` (default
//! 600) of the previous one; a longer gap opens a new incident.
//! `incident_id = site|service|opened_at_ms`, `opened_at` and `last_at` are
//! the first and last alerts' event times, the severity is the highest of
//! its alerts. Every alert counts, suppressed and flapping ones included:
//! they are evidence of the same problem even when nobody was paged.
//!
//! # Determinism
//!
//! The events of `alerts` only say which (site, service) changed. For each
//! one a batch touches, the incidents are recomputed from every alert of
//! that pair in the `alerts` table (the alert manager commits an alert
//! before it publishes it), in the batch's transaction: the pair's
//! incidents and their links are deleted and inserted again. The tables are
//! therefore a function of the stored alerts, whatever the arrival order,
//! the batch boundaries or the replays.
//!
//! # Limits
//!
//! - Incidents are per (site, service): a problem spanning services of one
//!   site makes one incident per service; nothing correlates across
//!   services.
//! - Recomputing a pair reads all its alerts: the cost of a batch grows with
//!   the pair's history, as nothing is ever closed or archived.
//! - An incident's id is its opening time, so an alert raised before an
//!   incident's first alert renames that incident (old id deleted, new one
//!   inserted).

pub mod grouping;

use std::collections::BTreeSet;

use fleet_runtime::config::{env_number, ConfigError};
use fleet_runtime::events::{Alert, ALERTS};
use fleet_runtime::{Outcome, Output, ProcessError, Processor};
use grouping::{incidents, Incident, Member};
use sqlx::PgConnection;
use tracing::debug;

/// The worker's name: consumer group, metrics label, log field.
pub const NAME: &str = "incident-correlator";

/// Runs the correlator as this process's worker, with its gap from the
/// environment; returns the exit code.
pub async fn run_process() -> i32 {
    fleet_runtime::run_configured(NAME, Correlator::from_env()).await
}

/// The incident correlator, with its gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correlator {
    gap_ms: i64,
}

impl Correlator {
    /// A correlator joining alerts raised within `gap_s` seconds.
    pub fn new(gap_s: u64) -> Self {
        Self {
            gap_ms: gap_s as i64 * 1000,
        }
    }

    /// Reads `INCIDENT_GAP_S` (default 600).
    pub fn from_env() -> Result<Self, ConfigError> {
        gap_from(&|key: &str| std::env::var(key).ok()).map(Self::new)
    }
}

/// `INCIDENT_GAP_S` from `lookup`: seconds, default 600, at most 30 days.
pub fn gap_from(lookup: &impl Fn(&str) -> Option<String>) -> Result<u64, ConfigError> {
    env_number(lookup, "INCIDENT_GAP_S", 600, 0..=30 * 86_400)
}

impl Processor for Correlator {
    type Event = Alert;

    fn name(&self) -> &'static str {
        NAME
    }

    fn input_topics(&self) -> Vec<String> {
        vec![ALERTS.into()]
    }

    fn output_topics(&self) -> Vec<String> {
        Vec::new()
    }

    fn parse(&self, _topic: &str, payload: &[u8]) -> Outcome<Alert> {
        let alert: Alert =
            serde_json::from_slice(payload).map_err(|e| format!("not an alert: {e}"))?;
        if alert.site.trim().is_empty() || alert.service.trim().is_empty() {
            return Err(format!(
                "alert {} without a site or service",
                alert.alert_id
            ));
        }
        Ok(alert)
    }

    async fn process(
        &mut self,
        events: Vec<Alert>,
        tx: &mut PgConnection,
    ) -> Result<Vec<Output>, ProcessError> {
        let pairs: BTreeSet<(String, String)> = events
            .into_iter()
            .map(|alert| (alert.site, alert.service))
            .collect();
        for (site, service) in pairs {
            self.recompute(&site, &service, tx).await?;
        }
        Ok(Vec::new())
    }
}

impl Correlator {
    /// Replaces the incidents of `site` and `service` by those of its
    /// stored alerts.
    async fn recompute(
        &self,
        site: &str,
        service: &str,
        tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("incidents|{site}|{service}"))
            .execute(&mut *tx)
            .await?;
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT alert_id, round(extract(epoch FROM raised_at) * 1000)::bigint, severity \
             FROM alerts WHERE site = $1 AND service = $2",
        )
        .bind(site)
        .bind(service)
        .fetch_all(&mut *tx)
        .await?;
        let members = rows
            .into_iter()
            .map(|(alert_id, raised_at_ms, severity)| Member {
                alert_id,
                raised_at_ms,
                severity,
            })
            .collect();
        let found = incidents(site, service, members, self.gap_ms);
        replace(site, service, &found, tx).await?;
        debug!(
            site,
            service,
            incidents = found.len(),
            "incidents recomputed"
        );
        Ok(())
    }
}

/// Deletes the incidents of `site` and `service` with their links, and
/// inserts `found`.
async fn replace(
    site: &str,
    service: &str,
    found: &[Incident],
    tx: &mut PgConnection,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM incident_alerts WHERE incident_id IN \
         (SELECT incident_id FROM incidents WHERE site = $1 AND service = $2)",
    )
    .bind(site)
    .bind(service)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM incidents WHERE site = $1 AND service = $2")
        .bind(site)
        .bind(service)
        .execute(&mut *tx)
        .await?;
    let column = |f: fn(&Incident) -> i64| found.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO incidents (incident_id, site, service, opened_at, last_at, severity) \
         SELECT id, $1, $2, to_timestamp(opened / 1000.0), to_timestamp(last / 1000.0), severity \
         FROM UNNEST($3::text[], $4::int8[], $5::int8[], $6::text[]) \
              AS t(id, opened, last, severity)",
    )
    .bind(site)
    .bind(service)
    .bind(
        found
            .iter()
            .map(|i| i.incident_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(column(|i| i.opened_at_ms))
    .bind(column(|i| i.last_at_ms))
    .bind(found.iter().map(|i| i.severity.clone()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let (incident_ids, alert_ids): (Vec<String>, Vec<String>) = found
        .iter()
        .flat_map(|i| {
            i.alert_ids
                .iter()
                .map(|a| (i.incident_id.clone(), a.clone()))
        })
        .unzip();
    sqlx::query(
        "INSERT INTO incident_alerts (incident_id, alert_id) \
         SELECT * FROM UNNEST($1::text[], $2::text[])",
    )
    .bind(incident_ids)
    .bind(alert_ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_defaults_to_ten_minutes_and_names_its_variable_when_bad() {
        assert_eq!(gap_from(&|_: &str| None).unwrap(), 600);
        let err = gap_from(&|_: &str| Some("soon".to_string())).unwrap_err();
        assert_eq!(err.variable, "INCIDENT_GAP_S");
    }

    #[test]
    fn an_alert_without_a_site_is_rejected() {
        let payload = br#"{"alert_id":"a","source_id":"s","kind":"anomaly","entity":"e",
            "site":"","service":"web","metric":"cpu","severity":"warning",
            "raised_at_ms":0,"summary":""}"#;
        let err = Correlator::new(600).parse(ALERTS, payload).unwrap_err();
        assert!(err.contains("without a site"), "{err}");
    }
}
