//! data-ingestor: the fleet's entry point. Reads `telemetry.raw`, rejects
//! what is not a valid measurement (to the dead-letter topic, with the
//! reason), converts values to their metric's canonical unit, stores each
//! event once in `measurements`, and publishes it on `telemetry.normalized`.
//!
//! Duplicates are dropped by event id: within a batch, and across batches
//! through the `published` flag of `measurements` (an outbox). An event is
//! republished only while its row is unpublished, which is exactly the case
//! of a crash between the database commit and the broker's acknowledgement.

pub mod normalize;

use std::collections::HashSet;

use fleet_runtime::events::{Measurement, RawTelemetry, TELEMETRY_NORMALIZED, TELEMETRY_RAW};
use fleet_runtime::{Outcome, Output, ProcessError, Processor};
use sqlx::{PgConnection, PgPool};

/// The worker's name: consumer group, metrics label, log field.
pub const NAME: &str = "data-ingestor";

/// Runs the ingestor as this process's worker; returns the exit code.
pub async fn run_process() -> i32 {
    fleet_runtime::run_process(Ingestor::default()).await
}

/// The ingestor; holds the ids published by the batch in flight.
#[derive(Debug, Default)]
pub struct Ingestor {
    in_flight: Vec<String>,
}

impl Processor for Ingestor {
    type Event = Measurement;

    fn name(&self) -> &'static str {
        NAME
    }

    fn input_topics(&self) -> Vec<String> {
        vec![TELEMETRY_RAW.into()]
    }

    fn output_topics(&self) -> Vec<String> {
        vec![TELEMETRY_NORMALIZED.into()]
    }

    fn parse(&self, _topic: &str, payload: &[u8]) -> Outcome<Measurement> {
        let raw: RawTelemetry =
            serde_json::from_slice(payload).map_err(|e| format!("not a telemetry event: {e}"))?;
        normalize::measurement(raw)
    }

    async fn process(
        &mut self,
        events: Vec<Measurement>,
        tx: &mut PgConnection,
    ) -> Result<Vec<Output>, ProcessError> {
        let events = first_of_each_id(events);
        store(&events, tx).await?;
        let ids: Vec<String> = events.iter().map(|m| m.event_id.clone()).collect();
        let unpublished: HashSet<String> = sqlx::query_scalar(
            "SELECT event_id FROM measurements WHERE event_id = ANY($1) AND NOT published",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let outputs: Vec<Output> = events
            .iter()
            .filter(|m| unpublished.contains(&m.event_id))
            .map(|m| Output::json(TELEMETRY_NORMALIZED, m.entity.clone(), m))
            .collect();
        self.in_flight = unpublished.into_iter().collect();
        Ok(outputs)
    }

    async fn published(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        fleet_runtime::db::mark_published(pool, "measurements", "event_id", &mut self.in_flight)
            .await
    }
}

/// Keeps the first event of each id, in order.
fn first_of_each_id(events: Vec<Measurement>) -> Vec<Measurement> {
    let mut seen = HashSet::new();
    events
        .into_iter()
        .filter(|m| seen.insert(m.event_id.clone()))
        .collect()
}

/// Inserts the batch in one statement; rows already present are kept.
async fn store(events: &[Measurement], tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    let column = |f: fn(&Measurement) -> String| events.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO measurements \
         (event_id, entity, site, service, metric, unit, value, is_error, event_time) \
         SELECT id, entity, site, service, metric, unit, value, is_error, \
                to_timestamp(ts_ms / 1000.0) \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::float8[], $8::bool[], $9::int8[]) \
              AS t(id, entity, site, service, metric, unit, value, is_error, ts_ms) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(column(|m| m.event_id.clone()))
    .bind(column(|m| m.entity.clone()))
    .bind(column(|m| m.site.clone()))
    .bind(column(|m| m.service.clone()))
    .bind(column(|m| m.metric.clone()))
    .bind(column(|m| m.unit.clone()))
    .bind(events.iter().map(|m| m.value).collect::<Vec<_>>())
    .bind(events.iter().map(|m| m.error).collect::<Vec<_>>())
    .bind(events.iter().map(|m| m.ts_ms).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
