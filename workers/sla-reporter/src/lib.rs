//! sla-reporter: availability and latency SLO compliance and error-budget
//! burn per service and UTC day, from the closed KPI windows.
//!
//! The rules, for one service and one UTC day (the day of each window's
//! start; with windows that divide a day, none straddles midnight):
//! - the day's windows are the service's `latency` windows: every latency
//!   measurement is one request, its error flag says whether it failed;
//! - requests = the sum of the windows' counts; errors = the sum of each
//!   window's `error_rate × count`, rounded to a whole request;
//! - availability = 1 − errors / requests;
//! - latency p95 = the nearest-rank 95th percentile of the windows' p95
//!   values: the p95 latency that 95 % of the day's windows stayed at or
//!   under;
//! - availability is met when it is at or above `SLO_AVAILABILITY`, latency
//!   when the p95 is at or under `SLO_LATENCY_P95_MS`;
//! - error-budget burn = (1 − availability) / (1 − `SLO_AVAILABILITY`): 1
//!   means the day spent exactly the failures the target allows.
//!
//! Each batch recomputes, in SQL from `kpi_windows`, every (service, day)
//! its latency windows touch, and upserts `sla_reports`, so the final table
//! does not depend on batch boundaries, replays or partition order. A
//! transaction-scoped advisory lock per (service, day) orders concurrent
//! replicas, so a recomputation never overwrites a newer one.
//!
//! Limits: a report covers the windows closed so far, so today's row grows
//! until the day ends; the aggregation scans the day's windows of the
//! service without an index on `(service, metric, window_start)`; the
//! targets are the same for every service; no topic is written (the
//! reports are read from the table).

pub mod slo;

use std::collections::BTreeSet;

use fleet_runtime::config::ConfigError;
use fleet_runtime::events::{KpiWindow, KPI_WINDOWS};
use fleet_runtime::{Outcome, Output, ProcessError, Processor};
use slo::{day_of, DayTotals, SloTargets};
use sqlx::PgConnection;
use tracing::debug;

/// The worker's name: consumer group, metrics label, log field.
pub const NAME: &str = "sla-reporter";

/// The metric whose windows count as requests.
pub const LATENCY_METRIC: &str = "latency";

/// Runs the SLA reporter as this process's worker, with its targets from
/// the environment; returns the exit code.
pub async fn run_process() -> i32 {
    fleet_runtime::run_configured(NAME, SlaReporter::from_env()).await
}

/// The SLA reporter and the targets it holds services to.
#[derive(Debug, Clone)]
pub struct SlaReporter {
    targets: SloTargets,
}

impl SlaReporter {
    /// A reporter holding services to `targets`.
    pub fn new(targets: SloTargets) -> Self {
        Self { targets }
    }

    /// Reads the targets from the environment (`SLO_AVAILABILITY`,
    /// `SLO_LATENCY_P95_MS`).
    pub fn from_env() -> Result<Self, ConfigError> {
        SloTargets::from_env().map(Self::new)
    }
}

/// The (service, UTC day) pairs whose reports `windows` change, in order.
pub fn touched_days(windows: &[KpiWindow]) -> BTreeSet<(String, i32)> {
    windows
        .iter()
        .filter(|w| w.metric == LATENCY_METRIC)
        .map(|w| (w.service.clone(), day_of(w.window_start_ms)))
        .collect()
}

impl Processor for SlaReporter {
    type Event = KpiWindow;

    fn name(&self) -> &'static str {
        NAME
    }

    fn input_topics(&self) -> Vec<String> {
        vec![KPI_WINDOWS.into()]
    }

    fn output_topics(&self) -> Vec<String> {
        Vec::new()
    }

    fn parse(&self, _topic: &str, payload: &[u8]) -> Outcome<KpiWindow> {
        KpiWindow::from_payload(payload)
    }

    async fn process(
        &mut self,
        events: Vec<KpiWindow>,
        tx: &mut PgConnection,
    ) -> Result<Vec<Output>, ProcessError> {
        let days = touched_days(&events);
        if days.is_empty() {
            return Ok(Vec::new());
        }
        for (service, day) in &days {
            lock_day(tx, service, *day).await?;
        }
        let totals = day_totals(tx, &days).await?;
        upsert(tx, &self.targets, &totals).await?;
        debug!(
            worker = NAME,
            reports = totals.len(),
            "service days recomputed"
        );
        Ok(Vec::new())
    }
}

/// Waits for, and holds until the transaction ends, the lock of one
/// service's day; taken in (service, day) order, so replicas never deadlock.
async fn lock_day(tx: &mut PgConnection, service: &str, day: i32) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("{NAME}|{service}|{day}"))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// One service's day with its totals.
type ServiceDay = (String, i32, DayTotals);

/// The totals of every (service, day) in `days` that has latency windows.
async fn day_totals(
    tx: &mut PgConnection,
    days: &BTreeSet<(String, i32)>,
) -> Result<Vec<ServiceDay>, sqlx::Error> {
    let (services, numbers): (Vec<String>, Vec<i32>) = days.iter().cloned().unzip();
    let rows: Vec<(String, i32, i64, i64, i64, f64)> = sqlx::query_as(
        "SELECT t.service, t.day, count(*), sum(w.count)::bigint, \
             sum(round(w.error_rate * w.count))::bigint, \
             percentile_disc(0.95) WITHIN GROUP (ORDER BY w.p95) \
         FROM unnest($1::text[], $2::int[]) AS t(service, day) \
         JOIN kpi_windows w ON w.service = t.service AND w.metric = $3 \
             AND w.window_start >= to_timestamp(t.day::bigint * 86400) \
             AND w.window_start < to_timestamp((t.day::bigint + 1) * 86400) \
         GROUP BY t.service, t.day ORDER BY t.service, t.day",
    )
    .bind(services)
    .bind(numbers)
    .bind(LATENCY_METRIC)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(service, day, windows, requests, errors, latency_p95_ms)| {
                let totals = DayTotals {
                    windows,
                    requests,
                    errors,
                    latency_p95_ms,
                };
                (service, day, totals)
            },
        )
        .collect())
}

/// Writes the reports of `totals`, replacing earlier ones of the same day.
async fn upsert(
    tx: &mut PgConnection,
    targets: &SloTargets,
    totals: &[ServiceDay],
) -> Result<(), sqlx::Error> {
    let compliance: Vec<_> = totals.iter().map(|(_, _, t)| targets.assess(t)).collect();
    sqlx::query(
        "INSERT INTO sla_reports (service, day, windows, requests, errors, availability, \
             latency_p95_ms, availability_target, latency_p95_target_ms, availability_met, \
             latency_met, error_budget_burn) \
         SELECT service, date '1970-01-01' + day, windows, requests, errors, availability, \
             latency_p95_ms, $10, $11, availability_met, latency_met, burn \
         FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[], \
             $6::float8[], $7::float8[], $8::bool[], $9::bool[], $12::float8[]) \
             AS r(service, day, windows, requests, errors, availability, latency_p95_ms, \
                  availability_met, latency_met, burn) \
         ON CONFLICT (service, day) DO UPDATE SET windows = EXCLUDED.windows, \
             requests = EXCLUDED.requests, errors = EXCLUDED.errors, \
             availability = EXCLUDED.availability, latency_p95_ms = EXCLUDED.latency_p95_ms, \
             availability_target = EXCLUDED.availability_target, \
             latency_p95_target_ms = EXCLUDED.latency_p95_target_ms, \
             availability_met = EXCLUDED.availability_met, latency_met = EXCLUDED.latency_met, \
             error_budget_burn = EXCLUDED.error_budget_burn",
    )
    .bind(totals.iter().map(|t| t.0.clone()).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.1).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.2.windows).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.2.requests).collect::<Vec<_>>())
    .bind(totals.iter().map(|t| t.2.errors).collect::<Vec<_>>())
    .bind(
        compliance
            .iter()
            .map(|c| c.availability)
            .collect::<Vec<_>>(),
    )
    .bind(
        totals
            .iter()
            .map(|t| t.2.latency_p95_ms)
            .collect::<Vec<_>>(),
    )
    .bind(
        compliance
            .iter()
            .map(|c| c.availability_met)
            .collect::<Vec<_>>(),
    )
    .bind(compliance.iter().map(|c| c.latency_met).collect::<Vec<_>>())
    .bind(targets.availability)
    .bind(targets.latency_p95_ms)
    .bind(
        compliance
            .iter()
            .map(|c| c.error_budget_burn)
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(service: &str, metric: &str, start_ms: i64) -> KpiWindow {
        let entity = format!("lon-{service}-1");
        KpiWindow {
            window_id: KpiWindow::id_for(&entity, metric, start_ms),
            entity,
            site: "lon".into(),
            service: service.into(),
            metric: metric.into(),
            window_start_ms: start_ms,
            window_end_ms: start_ms + 60_000,
            count: 6,
            mean: 40.0,
            min: 35.0,
            max: 45.0,
            p95: 44.0,
            error_rate: 1.0 / 6.0,
        }
    }

    #[test]
    fn only_latency_windows_touch_a_report() {
        let day = 1_767_225_600_000;
        let windows = [
            window("auth", "latency", day),
            window("auth", "latency", day + 60_000),
            window("auth", "cpu", day + 120_000),
            window("search", "cpu", day),
            window("search", "latency", day + slo::DAY_MS - 60_000),
            window("search", "latency", day + slo::DAY_MS),
        ];
        let touched: Vec<(String, i32)> = touched_days(&windows).into_iter().collect();
        assert_eq!(
            touched,
            vec![
                ("auth".to_string(), 20_454),
                ("search".to_string(), 20_454),
                ("search".to_string(), 20_455),
            ]
        );
    }
}
