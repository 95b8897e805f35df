//! The compactor against the real PostgreSQL: measurements and KPI progress
//! are inserted directly, ticks are called directly, and the rollups and
//! the rows left are checked exactly against an oracle computed here from
//! the inserted rows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use fleet_runtime::Task;
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::services::{Placement, Postgres};
use retention_compactor::cutoff::hour_start_ms;
use retention_compactor::{Compaction, Compactor};
use sqlx::PgPool;

/// 2026-01-01T00:00Z, ms.
const T0: i64 = 1_767_225_600_000;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// The default retention: the fixture's 2026 data is far older than it.
const WEEK: Duration = Duration::from_secs(604_800);

/// One raw measurement as inserted.
#[derive(Debug, Clone)]
struct Row {
    event_id: String,
    entity: &'static str,
    metric: &'static str,
    ts_ms: i64,
    value: f64,
    published: bool,
}

/// A rollup as stored: count, sum, min, max.
type Rollup = (i64, f64, f64, f64);
/// Rollups by entity, metric and hour start (ms).
type Rollups = BTreeMap<(String, String, i64), Rollup>;

/// A migrated PostgreSQL of its own, removed when dropped.
struct Db {
    pool: PgPool,
    _postgres: Postgres,
}

async fn migrated_db() -> Db {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fleet = FleetConfig::load(&root.join("fleetbench.toml")).expect("fleetbench.toml loads");
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    let postgres = Postgres::start(&engine, &fleet, &Placement::default())
        .await
        .expect("postgres starts");
    let pool = PgPool::connect(&postgres.url)
        .await
        .expect("postgres connects");
    fleet_runtime::db::migrate(&pool)
        .await
        .expect("the schema migrates");
    Db {
        pool,
        _postgres: postgres,
    }
}

/// A series' rows every `step_ms` from `from_ms` (inclusive) to `to_ms`
/// (exclusive), valued `first_value`, `first_value + 1`, ... (whole
/// numbers, so that sums are exact in any order).
fn series(
    entity: &'static str,
    metric: &'static str,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
    first_value: f64,
) -> Vec<Row> {
    (from_ms..to_ms)
        .step_by(step_ms as usize)
        .enumerate()
        .map(|(i, ts_ms)| Row {
            event_id: format!("{entity}-{metric}-{ts_ms}"),
            entity,
            metric,
            ts_ms,
            value: first_value + i as f64,
            published: true,
        })
        .collect()
}

async fn insert(pool: &PgPool, rows: &[Row]) {
    for row in rows {
        sqlx::query(
            "INSERT INTO measurements (event_id, entity, site, service, metric, unit, value, \
                 is_error, event_time, published) \
             VALUES ($1, $2, 'lon', 'checkout', $3, 'ms', $4, false, \
                 to_timestamp($5 / 1000.0), $6)",
        )
        .bind(&row.event_id)
        .bind(row.entity)
        .bind(row.metric)
        .bind(row.value)
        .bind(row.ts_ms)
        .bind(row.published)
        .execute(pool)
        .await
        .expect("a measurement inserts");
    }
}

/// Sets a series' KPI progress as the KPI worker would.
async fn set_progress(pool: &PgPool, entity: &str, metric: &str, closed_until_ms: i64) {
    sqlx::query(
        "INSERT INTO kpi_progress (entity, metric, max_event_ms, closed_until_ms) \
         VALUES ($1, $2, $3, $3) ON CONFLICT (entity, metric) DO UPDATE \
         SET max_event_ms = EXCLUDED.max_event_ms, closed_until_ms = EXCLUDED.closed_until_ms",
    )
    .bind(entity)
    .bind(metric)
    .bind(closed_until_ms)
    .execute(pool)
    .await
    .expect("kpi_progress is writable");
}

/// The rollups of `rows`, computed here without SQL.
fn rollups_of<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Rollups {
    let mut rollups = Rollups::new();
    for row in rows {
        let key = (
            row.entity.to_string(),
            row.metric.to_string(),
            hour_start_ms(row.ts_ms),
        );
        let rollup = rollups
            .entry(key)
            .or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        rollup.0 += 1;
        rollup.1 += row.value;
        rollup.2 = rollup.2.min(row.value);
        rollup.3 = rollup.3.max(row.value);
    }
    rollups
}

async fn stored_rollups(pool: &PgPool) -> Rollups {
    let rows: Vec<(String, String, i64, i64, f64, f64, f64)> = sqlx::query_as(
        "SELECT entity, metric, round(extract(epoch FROM hour) * 1000)::bigint, \
             count, sum, min, max FROM measurements_hourly",
    )
    .fetch_all(pool)
    .await
    .expect("measurements_hourly is readable");
    rows.into_iter()
        .map(|(entity, metric, hour, count, sum, min, max)| {
            ((entity, metric, hour), (count, sum, min, max))
        })
        .collect()
}

async fn stored_ids(pool: &PgPool) -> BTreeSet<String> {
    sqlx::query_scalar("SELECT event_id FROM measurements")
        .fetch_all(pool)
        .await
        .expect("measurements is readable")
        .into_iter()
        .collect()
}

fn ids<'a>(rows: impl IntoIterator<Item = &'a Row>) -> BTreeSet<String> {
    rows.into_iter().map(|r| r.event_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_behind_the_watermark_become_hourly_rollups_and_are_deleted() {
    let db = migrated_db().await;
    let latency = series(
        "lon-checkout-1",
        "latency",
        T0,
        T0 + 3 * HOUR_MS,
        10 * MINUTE_MS,
        10.0,
    );
    let cpu = series(
        "lon-checkout-1",
        "cpu",
        T0,
        T0 + 3 * HOUR_MS,
        10 * MINUTE_MS,
        100.0,
    );
    let unknown = series(
        "ams-search-1",
        "latency",
        T0,
        T0 + HOUR_MS,
        10 * MINUTE_MS,
        1.0,
    );
    let mut unpublished = series(
        "lon-checkout-1",
        "latency",
        T0 + 5 * MINUTE_MS,
        T0 + 6 * MINUTE_MS,
        MINUTE_MS,
        999.0,
    );
    unpublished[0].published = false;
    for rows in [&latency, &cpu, &unknown, &unpublished] {
        insert(&db.pool, rows).await;
    }
    set_progress(&db.pool, "lon-checkout-1", "latency", T0 + 2 * HOUR_MS).await;
    set_progress(&db.pool, "lon-checkout-1", "cpu", T0 + 90 * MINUTE_MS).await;

    let mut compactor = Compactor::new(WEEK, 4);
    let moved = compactor.tick(&db.pool).await.expect("the tick succeeds");

    let cutoff_ms = T0 + 90 * MINUTE_MS;
    let (old, recent): (Vec<&Row>, Vec<&Row>) = latency
        .iter()
        .chain(&cpu)
        .partition(|row| row.ts_ms < cutoff_ms);
    assert_eq!(moved, 18, "9 rows of each known series before 01:30");
    assert_eq!(old.len(), 18);
    let rollups = stored_rollups(&db.pool).await;
    assert_eq!(rollups, rollups_of(old.iter().copied()));
    assert_eq!(
        rollups[&("lon-checkout-1".to_string(), "latency".to_string(), T0)],
        (6, 75.0, 10.0, 15.0)
    );
    assert_eq!(
        rollups[&(
            "lon-checkout-1".to_string(),
            "cpu".to_string(),
            T0 + HOUR_MS
        )],
        (3, 321.0, 106.0, 108.0),
        "01:00, 01:10 and 01:20 only"
    );
    let left = ids(recent.iter().copied().chain(&unknown).chain(&unpublished));
    assert_eq!(stored_ids(&db.pool).await, left);

    let again = compactor
        .tick(&db.pool)
        .await
        .expect("the second tick succeeds");
    assert_eq!(again, 0);
    assert_eq!(stored_rollups(&db.pool).await, rollups);
    assert_eq!(stored_ids(&db.pool).await, left);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hour_compacted_in_two_parts_across_two_ticks_merges_into_one_rollup() {
    let db = migrated_db().await;
    let rows = series(
        "lon-search-1",
        "latency",
        T0,
        T0 + 2 * HOUR_MS,
        10 * MINUTE_MS,
        40.0,
    );
    insert(&db.pool, &rows).await;
    let mut compactor = Compactor::new(WEEK, 5_000);
    let key = ("lon-search-1".to_string(), "latency".to_string(), T0);

    set_progress(&db.pool, "lon-search-1", "latency", T0 + 30 * MINUTE_MS).await;
    assert_eq!(compactor.tick(&db.pool).await.unwrap(), 3);
    let first = stored_rollups(&db.pool).await;
    assert_eq!(
        first,
        BTreeMap::from([(key.clone(), (3, 123.0, 40.0, 42.0))])
    );

    set_progress(&db.pool, "lon-search-1", "latency", T0 + HOUR_MS).await;
    assert_eq!(compactor.tick(&db.pool).await.unwrap(), 3);
    let merged = stored_rollups(&db.pool).await;
    assert_eq!(merged, rollups_of(&rows[..6]));
    assert_eq!(merged[&key], (6, 255.0, 40.0, 45.0));
    assert_eq!(stored_ids(&db.pool).await, ids(&rows[6..]));

    assert_eq!(compactor.tick(&db.pool).await.unwrap(), 0);
    assert_eq!(stored_rollups(&db.pool).await, merged);
    assert_eq!(stored_ids(&db.pool).await, ids(&rows[6..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_compacted_while_kpi_progress_is_empty() {
    let db = migrated_db().await;
    let rows = series(
        "lon-checkout-1",
        "latency",
        T0,
        T0 + HOUR_MS,
        MINUTE_MS,
        1.0,
    );
    insert(&db.pool, &rows).await;

    let done = Compactor::new(Duration::ZERO, 10)
        .compact(&db.pool, T0 + 365 * 24 * HOUR_MS)
        .await
        .unwrap();

    assert_eq!(done, Compaction::default());
    assert!(stored_rollups(&db.pool).await.is_empty());
    assert_eq!(stored_ids(&db.pool).await, ids(&rows));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retention_holds_recent_rows_back_when_the_kpi_worker_is_ahead() {
    let db = migrated_db().await;
    let rows = series(
        "lon-checkout-1",
        "cpu",
        T0,
        T0 + 3 * HOUR_MS,
        10 * MINUTE_MS,
        0.0,
    );
    insert(&db.pool, &rows).await;
    set_progress(&db.pool, "lon-checkout-1", "cpu", T0 + 10 * HOUR_MS).await;

    let done = Compactor::new(Duration::from_secs(3_600), 5)
        .compact(&db.pool, T0 + 3 * HOUR_MS)
        .await
        .unwrap();

    assert_eq!(done.cutoff_ms, Some(T0 + 2 * HOUR_MS));
    assert_eq!((done.rows, done.batches, done.rollups), (12, 3, 4));
    assert_eq!(stored_rollups(&db.pool).await, rollups_of(&rows[..12]));
    assert_eq!(stored_ids(&db.pool).await, ids(&rows[12..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_compactors_at_once_move_every_row_exactly_once() {
    let db = migrated_db().await;
    let mut rows = series(
        "lon-checkout-1",
        "latency",
        T0,
        T0 + 2 * HOUR_MS,
        10_000,
        0.0,
    );
    rows.extend(series(
        "lon-checkout-1",
        "cpu",
        T0,
        T0 + 2 * HOUR_MS,
        10_000,
        0.0,
    ));
    insert(&db.pool, &rows).await;
    for metric in ["latency", "cpu"] {
        set_progress(&db.pool, "lon-checkout-1", metric, T0 + 2 * HOUR_MS).await;
    }

    let (mut one, mut two) = (Compactor::new(WEEK, 7), Compactor::new(WEEK, 7));
    let (a, b) = tokio::join!(one.tick(&db.pool), two.tick(&db.pool));

    assert_eq!(a.unwrap() + b.unwrap(), rows.len() as u64);
    assert_eq!(stored_rollups(&db.pool).await, rollups_of(&rows));
    assert!(stored_ids(&db.pool).await.is_empty());
}
