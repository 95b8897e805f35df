//! Window aggregation throughput (events/s): the KPI worker closing the
//! fixture's windows in PostgreSQL, the real thing. PostgreSQL is started
//! once and the fixture stored once through the ingestor; each iteration
//! then feeds every normalised event to `KpiWorker::process` in batches of
//! the runtime's default size, inside one transaction that is rolled back,
//! so every iteration starts from the same state. After each batch the
//! closed windows are marked published, as the runtime's acknowledgement
//! step does, so the outbox query reads what it reads in production.
//!
//! Needs Docker and the `fleetbench/postgres` image (`fleetbench
//! bootstrap`), like the integration tests.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use data_ingestor::Ingestor;
use fleet_runtime::events::{Measurement, TELEMETRY_RAW};
use fleet_runtime::Processor;
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::services::{Placement, Postgres};
use kpi_worker::KpiWorker;
use sqlx::PgPool;

/// Events per batch: the runtime's default `BATCH_MAX_EVENTS`.
const BATCH_EVENTS: usize = 500;
/// Windows the fixture closes: 12 series, 58 of their 60 windows each.
const CLOSED_WINDOWS: i64 = 12 * 58;

/// PostgreSQL holding the fixture's measurements, and the events the
/// ingestor published for them, in fixture order.
struct Stored {
    pool: PgPool,
    events: Vec<Measurement>,
    _postgres: Postgres,
}

impl Stored {
    async fn start() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let fleet =
            FleetConfig::load(&root.join("fleetbench.toml")).expect("fleetbench.toml loads");
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

        let events = normalized_fixture(&root);
        let mut tx = pool.begin().await.expect("a transaction begins");
        Ingestor::default()
            .process(events.clone(), &mut tx)
            .await
            .expect("the ingestor stores the fixture");
        tx.commit().await.expect("the fixture commits");
        Self {
            pool,
            events,
            _postgres: postgres,
        }
    }
}

/// The fixture's valid events, normalised by the ingestor's own `parse`,
/// each event id once, as they reach `telemetry.normalized`.
fn normalized_fixture(root: &std::path::Path) -> Vec<Measurement> {
    let path = root.join("fixtures/telemetry.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the fixture {}: {e}", path.display()));
    let ingestor = Ingestor::default();
    let mut seen = HashSet::new();
    text.lines()
        .filter_map(|line| ingestor.parse(TELEMETRY_RAW, line.as_bytes()).ok())
        .filter(|m| seen.insert(m.event_id.clone()))
        .collect()
}

/// Closes every window of `events` in a transaction, rolled back; returns
/// how many windows it had closed.
async fn close_all_windows(pool: &PgPool, events: &[Measurement]) -> i64 {
    let mut worker = KpiWorker::new(Duration::from_secs(60), Duration::from_secs(60));
    let mut tx = pool.begin().await.expect("a transaction begins");
    for batch in events.chunks(BATCH_EVENTS) {
        worker
            .process(batch.to_vec(), &mut tx)
            .await
            .expect("the KPI worker processes a batch");
        sqlx::query("UPDATE kpi_windows SET published = true WHERE NOT published")
            .execute(&mut *tx)
            .await
            .expect("the windows are marked published");
    }
    let closed: i64 = sqlx::query_scalar("SELECT count(*) FROM kpi_windows")
        .fetch_one(&mut *tx)
        .await
        .expect("kpi_windows is readable");
    tx.rollback().await.expect("the transaction rolls back");
    closed
}

fn window_aggregation(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let stored = runtime.block_on(Stored::start());
    let closed = runtime.block_on(close_all_windows(&stored.pool, &stored.events));
    assert_eq!(closed, CLOSED_WINDOWS, "windows closed from the fixture");

    let mut group = c.benchmark_group("kpi-worker");
    group.throughput(Throughput::Elements(stored.events.len() as u64));
    group.sample_size(10);
    group.bench_function("close the fixture's windows in PostgreSQL", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    close_all_windows(&stored.pool, &stored.events).await;
                }
                started.elapsed()
            })
        })
    });
    group.finish();
    // The container is removed on drop, which needs the runtime.
    runtime.block_on(async move { drop(stored) });
}

criterion_group!(benches, window_aggregation);
criterion_main!(benches);
