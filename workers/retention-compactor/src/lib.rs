//! retention-compactor: a periodic worker that rolls raw `measurements`
//! older than the retention into `measurements_hourly` (per entity, metric
//! and UTC hour: count, sum, min, max), then deletes them.
//!
//! Each tick computes one cutoff ([`cutoff::cutoff_ms`]): the older of
//! `now - RETENTION_S` and the KPI worker's watermark, the smallest
//! `kpi_progress.closed_until_ms` over all series. Every KPI window ending at
//! or before the watermark is closed and will never be computed again, so no
//! measurement a window still needs is deleted. With `kpi_progress` empty
//! the KPI worker has closed nothing yet and nothing is compacted.
//!
//! The tick then moves rows before the cutoff in batches of
//! `RETENTION_BATCH`, one transaction per batch: the batch's rows are
//! selected `FOR UPDATE SKIP LOCKED` (two compactors never take the same
//! rows), deleted, and their aggregates merged into the hourly rollups by
//! upsert (count and sum added, min and max kept), so an hour may be
//! compacted in several parts, by several ticks or compactors, and ends up
//! the same. The tick loops until a batch comes back short. Two more
//! guards keep a row in place: its series has no `kpi_progress` row yet (a
//! new series' first windows are not computed yet, whatever the other
//! series' watermark), or it is not yet `published` (the ingestor's outbox
//! has not handed it on; deleting it could let a replay store it again).
//!
//! Configuration, besides the runtime's periodic settings
//! (`DATABASE_URL`, `TICK_INTERVAL_MS`, ...):
//! - `RETENTION_S`: how long raw measurements are kept, seconds
//!   (default 604800, seven days; 0 to 315360000).
//! - `RETENTION_BATCH`: rows per transaction (default 5000; 1 to 1000000).
//!
//! Limits:
//! - The ingestor drops duplicates by `measurements.event_id`, so its
//!   duplicate detection reaches back only to the cutoff: an event resent
//!   after its row was compacted is stored, published and rolled up again.
//! - The watermark is the minimum over all series, so a series that stops
//!   (a decommissioned entity) holds compaction back at its last closed
//!   window until its `kpi_progress` row is removed.
//! - Measurements later than the KPI worker's lateness that arrive after
//!   their hour was compacted are merged into that hour's rollup at a later
//!   tick; the rollup is final only once no more such events come.
//! - Rollups keep no error flags, site or service; sums of one hour merged
//!   in several parts may differ from a single sum in the last bits.
//! - The cutoff uses this process's clock for the retention part only;
//!   with the default retention, data of the last seven days never moves.

pub mod cutoff;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet_runtime::config::{env_number, ConfigError};
use fleet_runtime::Task;
use sqlx::PgPool;
use tracing::{debug, info};

/// The worker's name: metrics label, log field.
pub const NAME: &str = "retention-compactor";

/// Runs the compactor as this process's worker, with its retention settings
/// from the environment; returns the exit code.
pub async fn run_process() -> i32 {
    fleet_runtime::run_periodic_configured(NAME, Compactor::from_env()).await
}

/// A failed compaction, naming the step and the object.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The watermark could not be read.
    #[error("reading the KPI watermark from kpi_progress: {0}")]
    Watermark(#[source] sqlx::Error),
    /// A batch could not be moved; its transaction was rolled back.
    #[error("moving measurements before {cutoff_ms} ms into measurements_hourly: {source}")]
    Batch {
        /// The tick's cutoff, ms since the epoch.
        cutoff_ms: i64,
        /// The driver's error.
        source: sqlx::Error,
    },
}

impl CompactError {
    /// The driver's error underneath.
    pub fn into_source(self) -> sqlx::Error {
        match self {
            Self::Watermark(source) | Self::Batch { source, .. } => source,
        }
    }
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compaction {
    /// The cutoff used, ms since the epoch; `None` when there was no
    /// watermark and nothing was compacted.
    pub cutoff_ms: Option<i64>,
    /// Raw rows rolled up and deleted.
    pub rows: u64,
    /// Hourly rollups inserted or merged into (counted once per batch).
    pub rollups: u64,
    /// Transactions committed.
    pub batches: u32,
}

/// The compactor, with its retention and batch size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compactor {
    retention_ms: i64,
    batch_rows: i64,
}

impl Compactor {
    /// Keeps raw rows for `retention`, moves at most `batch_rows` (at least
    /// one) per transaction.
    pub fn new(retention: Duration, batch_rows: u32) -> Self {
        Self {
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            batch_rows: i64::from(batch_rows.max(1)),
        }
    }

    /// Reads `RETENTION_S` (default 604800) and `RETENTION_BATCH` (default 5000).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads the settings through `lookup`, for tests and embedding.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let retention_s: u64 = env_number(&lookup, "RETENTION_S", 604_800, 0..=315_360_000)?;
        let batch_rows: u32 = env_number(&lookup, "RETENTION_BATCH", 5_000, 1..=1_000_000)?;
        Ok(Self::new(Duration::from_secs(retention_s), batch_rows))
    }

    /// Compacts everything before the cutoff as of `now_ms`, batch by batch.
    pub async fn compact(&self, pool: &PgPool, now_ms: i64) -> Result<Compaction, CompactError> {
        let watermark_ms: Option<i64> =
            sqlx::query_scalar("SELECT min(closed_until_ms) FROM kpi_progress")
                .fetch_one(pool)
                .await
                .map_err(CompactError::Watermark)?;
        let Some(cutoff_ms) = cutoff::cutoff_ms(now_ms, self.retention_ms, watermark_ms) else {
            debug!(worker = NAME, "kpi_progress is empty: nothing to compact");
            return Ok(Compaction::default());
        };

        let mut done = Compaction {
            cutoff_ms: Some(cutoff_ms),
            ..Compaction::default()
        };
        loop {
            let (rows, rollups) = self
                .move_batch(pool, cutoff_ms)
                .await
                .map_err(|source| CompactError::Batch { cutoff_ms, source })?;
            if rows > 0 {
                done.rows += rows as u64;
                done.rollups += rollups as u64;
                done.batches += 1;
                debug!(worker = NAME, cutoff_ms, rows, rollups, "batch compacted");
            }
            if rows < self.batch_rows {
                break;
            }
        }

        if done.rows > 0 {
            info!(
                worker = NAME,
                cutoff_ms,
                watermark_ms,
                rows = done.rows,
                batches = done.batches,
                "measurements compacted"
            );
        }
        Ok(done)
    }

    /// Moves one batch of rows before `cutoff_ms` into the rollups in one
    /// transaction; returns the rows moved and the rollups written.
    async fn move_batch(&self, pool: &PgPool, cutoff_ms: i64) -> Result<(i64, i64), sqlx::Error> {
        let mut tx = pool.begin().await?;
        // Oldest first, along the event_time index, so a batch covers few
        // hours. Rollups are upserted in key order, so two compactors
        // merging into the same hours wait for each other instead of
        // deadlocking. Data-modifying CTEs run exactly once whether or not
        // the final SELECT reads them: the delete and the upsert go together.
        let moved: (i64, i64) = sqlx::query_as(
            "WITH batch AS ( \
                 SELECT m.event_id FROM measurements m \
                 WHERE m.event_time < to_timestamp($1 / 1000.0) AND m.published \
                   AND EXISTS (SELECT 1 FROM kpi_progress p \
                               WHERE p.entity = m.entity AND p.metric = m.metric) \
                 ORDER BY m.event_time LIMIT $2 FOR UPDATE OF m SKIP LOCKED \
             ), gone AS ( \
                 DELETE FROM measurements m USING batch b WHERE m.event_id = b.event_id \
                 RETURNING m.entity, m.metric, m.value, m.event_time \
             ), rolled AS ( \
                 INSERT INTO measurements_hourly AS h (entity, metric, hour, count, sum, min, max) \
                 SELECT entity, metric, date_trunc('hour', event_time, 'UTC'), \
                        count(*), sum(value), min(value), max(value) \
                 FROM gone GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 \
                 ON CONFLICT (entity, metric, hour) DO UPDATE SET \
                     count = h.count + EXCLUDED.count, sum = h.sum + EXCLUDED.sum, \
                     min = LEAST(h.min, EXCLUDED.min), max = GREATEST(h.max, EXCLUDED.max) \
                 RETURNING 1 \
             ) \
             SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM rolled)",
        )
        .bind(cutoff_ms)
        .bind(self.batch_rows)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(moved)
    }
}

impl Task for Compactor {
    fn name(&self) -> &'static str {
        NAME
    }

    /// One compaction as of the process clock; returns the rows compacted.
    async fn tick(&mut self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        match self.compact(pool, now_ms()).await {
            Ok(done) => Ok(done.rows),
            Err(error) => {
                tracing::warn!(worker = NAME, %error, "compaction failed");
                Err(error.into_source())
            }
        }
    }
}

/// The process clock, ms since the epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Compactor, ConfigError> {
        let env: HashMap<&str, &str> = pairs.iter().copied().collect();
        Compactor::from_lookup(|key| env.get(key).map(|v| v.to_string()))
    }

    #[test]
    fn the_defaults_keep_a_week_and_move_5000_rows_per_transaction() {
        assert_eq!(
            from(&[]).unwrap(),
            Compactor {
                retention_ms: 604_800_000,
                batch_rows: 5_000
            }
        );
    }

    #[test]
    fn a_zero_batch_is_refused_by_name() {
        let error = from(&[("RETENTION_BATCH", "0")]).unwrap_err();
        assert_eq!(error.variable, "RETENTION_BATCH");
    }

    #[test]
    fn a_retention_that_is_not_a_number_is_refused_by_name() {
        let error = from(&[("RETENTION_S", "7d")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable RETENTION_S: '7d' is not a whole number"
        );
    }
}
