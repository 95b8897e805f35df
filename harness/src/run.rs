//! `fleetbench run`: the runtime benchmark. For each strategy and base, one
//! after the other on the same broker and PostgreSQL, the nine workers run
//! as containers from that strategy's images on one Docker network; the
//! fixture (or a generated load) is fed in; startup, memory, CPU,
//! throughput, end-to-end latency and consumer lag are measured; and the
//! results are checked against the expected outputs and across strategies.
//! In the same run the ceiling is measured: the broker's produce-to-consume
//! rate with rdkafka alone and PostgreSQL's bulk insert rate.
//!
//! Definitions. Throughput: events fed, divided by the time from the first
//! event produced to the moment every worker has consumed its inputs to the
//! end. End-to-end latency of an event: from the moment it was produced to
//! the moment the KPI window holding it was written (`kpi_windows.written_at`);
//! events whose window never closes (the last minute of the stream) are not
//! counted. Startup: from the container's creation to its first `/healthz`
//! answer 200.
//!
//! Between runs the fleet's topics are deleted and created again, the
//! result tables are emptied, and every worker gets a consumer group of its
//! own for the run (`<worker>-<run>`), so each run starts from nothing.
//! Pointed at an existing cluster (`--kafka`, `--database-url`) the same
//! happens there: use a cluster meant for benchmarking.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerMemoryStats, ContainerStatsResponse};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StatsOptionsBuilder,
};
use futures_util::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde::Serialize;
use sqlx::PgPool;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tracing::{info, warn};

use crate::config::FleetConfig;
use crate::docker::{DockerError, Engine};
use crate::pipeline::{self, all_topics};
use crate::services::{split_reference, Broker, Placement, Postgres};
use crate::strategy::{self, Base, Strategy};
use crate::verify::{self, Digests, ExpectedOutputs, Mismatch};

/// Name prefix of everything a run starts: containers and the network.
pub const RUN_PREFIX: &str = "fleetbench-run";
/// Partitions of the fleet's topics during a run.
const PARTITIONS: i32 = 3;
/// Longest wait for a worker's `/healthz`.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for the pipeline to finish its input.
const FINISH_LIMIT: Duration = Duration::from_secs(600);

/// Errors of `fleetbench run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// A service could not be started or used.
    #[error(transparent)]
    Service(#[from] crate::services::ServiceError),
    /// The pipeline did not finish or could not be observed.
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    /// Results could not be read.
    #[error(transparent)]
    Verify(#[from] verify::VerifyError),
    /// An image the strategy needs is missing.
    #[error("image {image} of strategy {strategy} is missing; build it first: fleetbench build --strategy {strategy} --base {base}")]
    MissingImage {
        /// The tag.
        image: String,
        /// The strategy.
        strategy: String,
        /// The base.
        base: String,
    },
    /// A worker container failed.
    #[error("worker {worker} ({image}): {problem}")]
    Worker {
        /// The worker.
        worker: String,
        /// Its image.
        image: String,
        /// What went wrong.
        problem: String,
    },
    /// The broker or database refused an operation of the run.
    #[error("{operation}: {message}")]
    Operation {
        /// What was being done.
        operation: String,
        /// The error.
        message: String,
    },
}

fn op_error(operation: impl Into<String>) -> impl FnOnce(String) -> RunError {
    let operation = operation.into();
    move |message| RunError::Operation { operation, message }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Strategies, in order.
    pub strategies: Vec<Strategy>,
    /// Bases, in order.
    pub bases: Vec<Base>,
    /// Runs of each strategy and base.
    pub repeat: usize,
    /// The events to feed, as JSON lines.
    pub lines: Vec<String>,
    /// Whether `lines` is the committed fixture (then results are checked
    /// against the expected outputs).
    pub is_fixture: bool,
    /// Events per second to feed at; as fast as possible when `None`.
    pub rate: Option<u64>,
    /// An existing broker to use instead of starting one.
    pub kafka: Option<String>,
    /// An existing PostgreSQL to use instead of starting one.
    pub database_url: Option<String>,
    /// The expected outputs of the fixture.
    pub expected: Option<ExpectedOutputs>,
    /// Where each run's result tables are written as the canonical rows
    /// their digests hash (`<strategy>-<base>-<run>/<table>.tsv`), so that
    /// a run that failed verification can be diffed with one that passed.
    pub results_dir: Option<std::path::PathBuf>,
}

/// Where `fleetbench run` and `fleetbench bench` keep each run's result
/// tables, relative to the workspace root.
pub const RESULTS_DIR: &str = "target/fleetbench/logs/run";

/// Smallest, middle and largest of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Spread {
    /// Smallest value.
    pub min: f64,
    /// Median (the mean of the two middle values for an even count).
    pub median: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; all zero for none.
    pub fn of(values: &[f64]) -> Self {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return Self {
                min: 0.0,
                median: 0.0,
                max: 0.0,
            };
        }
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Self {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        }
    }
}

/// The value at quantile `q` (0..=1) of sorted `values`, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One worker's figures in one run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WorkerFigures {
    /// The worker.
    pub worker: String,
    /// The image it ran from.
    pub image: String,
    /// Container creation to `/healthz` 200, ms.
    pub startup_ms: f64,
    /// Highest memory use seen, bytes.
    pub peak_memory_bytes: f64,
    /// CPU time used, seconds.
    pub cpu_seconds: f64,
}

/// One run of one strategy on one base.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunFigures {
    /// Events fed.
    pub events: usize,
    /// Events per second through the pipeline.
    pub throughput_eps: f64,
    /// Seconds from the first event produced to every input consumed.
    pub drain_seconds: f64,
    /// End-to-end latency percentiles, ms.
    pub latency_p50_ms: f64,
    /// 95th percentile, ms.
    pub latency_p95_ms: f64,
    /// 99th percentile, ms.
    pub latency_p99_ms: f64,
    /// Events whose latency was measured.
    pub latency_samples: usize,
    /// Messages not yet consumed, summed over the stream workers, sampled
    /// about once a second: (seconds since the feed started, messages).
    pub lag: Vec<(f64, i64)>,
    /// Per worker.
    pub workers: Vec<WorkerFigures>,
    /// Digests of the result tables.
    pub digests: Digests,
    /// Tables that differ from the expected outputs (fixture runs only).
    pub mismatches: Vec<Mismatch>,
}

/// Repeated runs of one strategy on one base, summarised.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StrategyRuns {
    /// The strategy.
    pub strategy: Strategy,
    /// The base.
    pub base: Base,
    /// Every run.
    pub runs: Vec<RunFigures>,
    /// Throughput, events/s.
    pub throughput_eps: Spread,
    /// Throughput as a share of the ceiling measured in the same run.
    pub ceiling_ratio: Spread,
    /// Latency p50, ms.
    pub latency_p50_ms: Spread,
    /// Latency p95, ms.
    pub latency_p95_ms: Spread,
    /// Latency p99, ms.
    pub latency_p99_ms: Spread,
    /// Slowest worker's startup, ms.
    pub startup_max_ms: Spread,
    /// Peak memory of the nine workers added up, bytes.
    pub memory_total_bytes: Spread,
    /// CPU seconds of the nine workers added up.
    pub cpu_total_seconds: Spread,
    /// Whether every run matched the expected outputs (fixture runs) and
    /// the other runs.
    pub verified: bool,
}

/// The ceiling: what the broker and PostgreSQL do alone.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Ceiling {
    /// Messages per second produced and consumed back with rdkafka alone.
    pub broker_eps: f64,
    /// Rows per second inserted in batches of 500.
    pub postgres_rows_per_s: f64,
}

impl Ceiling {
    /// The lower of the two rates.
    pub fn lower(&self) -> f64 {
        self.broker_eps.min(self.postgres_rows_per_s)
    }
}

/// Everything `fleetbench run` measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunReport {
    /// Ceiling measured at the start.
    pub ceiling: Ceiling,
    /// Per strategy and base.
    pub strategies: Vec<StrategyRuns>,
    /// Whether the results of every strategy and base are identical.
    pub identical_across_strategies: bool,
}

/// Removes containers and the network a killed run left behind.
pub async fn remove_leftovers(engine: &Engine) -> Result<usize, RunError> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([(
            "name".to_string(),
            vec![RUN_PREFIX.to_string()],
        )]))
        .build();
    let containers = engine
        .client
        .list_containers(Some(options))
        .await
        .map_err(|e| op_error("listing leftover containers")(e.to_string()))?;
    let mut removed = 0;
    for container in containers {
        if let Some(id) = container.id {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            if engine
                .client
                .remove_container(&id, Some(options))
                .await
                .is_ok()
            {
                removed += 1;
            }
        }
    }
    let _ = engine.client.remove_network(RUN_PREFIX).await;
    if removed > 0 {
        warn!(
            removed,
            "removed containers an earlier, interrupted run left"
        );
    }
    Ok(removed)
}

/// Runs the benchmark of `options`.
pub async fn run(
    engine: &Engine,
    config: &FleetConfig,
    options: &RunOptions,
    mut progress: impl FnMut(&str),
) -> Result<RunReport, RunError> {
    remove_leftovers(engine).await?;
    for &strategy in &options.strategies {
        for &base in &options.bases {
            for plan in strategy::images(strategy) {
                let tag = plan.tag(strategy, base);
                if engine.image_facts(&tag).await?.is_none() {
                    return Err(RunError::MissingImage {
                        image: tag,
                        strategy: strategy.name().into(),
                        base: base.name().into(),
                    });
                }
            }
        }
    }
    let placement = Placement {
        network: Some(RUN_PREFIX.to_string()),
        name_prefix: RUN_PREFIX.to_string(),
    };
    progress("starting the broker and PostgreSQL");
    let broker = match &options.kafka {
        Some(brokers) => Broker::existing(brokers),
        None => Broker::start(engine, config, &placement).await?,
    };
    let postgres = match &options.database_url {
        Some(url) => Postgres::existing(url),
        None => Postgres::start(engine, config, &placement).await?,
    };
    let pool = fleet_runtime::db::connect(&postgres.url, 4)
        .await
        .map_err(|e| op_error("connecting to PostgreSQL")(e.to_string()))?;
    fleet_runtime::db::migrate(&pool)
        .await
        .map_err(|e| op_error("migrating the fleet schema")(e.to_string()))?;
    progress("measuring the ceiling");
    let ceiling = measure_ceiling(&broker.bootstrap_servers, &pool, &options.lines).await?;
    info!(
        broker_eps = ceiling.broker_eps,
        postgres_rows_per_s = ceiling.postgres_rows_per_s,
        "ceiling"
    );
    let mut summaries = Vec::new();
    let mut run_number = 0;
    for &strategy in &options.strategies {
        for &base in &options.bases {
            let mut runs = Vec::new();
            for repeat in 0..options.repeat {
                run_number += 1;
                progress(&format!(
                    "{} on {}: run {} of {}",
                    strategy.name(),
                    base.name(),
                    repeat + 1,
                    options.repeat
                ));
                let figures = run_once(
                    engine,
                    options,
                    &broker,
                    &postgres,
                    &pool,
                    strategy,
                    base,
                    &format!("-r{}-{run_number}", std::process::id()),
                )
                .await?;
                runs.push(figures);
            }
            summaries.push(summarise(strategy, base, runs, &ceiling));
        }
    }
    let first = summaries
        .first()
        .and_then(|s| s.runs.first())
        .map(|r| r.digests.clone());
    let identical_across_strategies = summaries
        .iter()
        .flat_map(|s| s.runs.iter())
        .all(|r| Some(&r.digests) == first.as_ref());
    drop(broker);
    drop(postgres);
    let _ = engine.client.remove_network(RUN_PREFIX).await;
    Ok(RunReport {
        ceiling,
        strategies: summaries,
        identical_across_strategies,
    })
}

fn summarise(
    strategy: Strategy,
    base: Base,
    runs: Vec<RunFigures>,
    ceiling: &Ceiling,
) -> StrategyRuns {
    let of = |f: &dyn Fn(&RunFigures) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
    let lower = ceiling.lower().max(f64::MIN_POSITIVE);
    let first = runs.first().map(|r| r.digests.clone());
    StrategyRuns {
        strategy,
        base,
        throughput_eps: of(&|r| r.throughput_eps),
        ceiling_ratio: of(&|r| r.throughput_eps / lower),
        latency_p50_ms: of(&|r| r.latency_p50_ms),
        latency_p95_ms: of(&|r| r.latency_p95_ms),
        latency_p99_ms: of(&|r| r.latency_p99_ms),
        startup_max_ms: of(&|r| r.workers.iter().map(|w| w.startup_ms).fold(0.0, f64::max)),
        memory_total_bytes: of(&|r| r.workers.iter().map(|w| w.peak_memory_bytes).sum()),
        cpu_total_seconds: of(&|r| r.workers.iter().map(|w| w.cpu_seconds).sum()),
        verified: runs
            .iter()
            .all(|r| r.mismatches.is_empty() && Some(&r.digests) == first.as_ref()),
        runs,
    }
}

/// Deletes the fleet's topics and creates them again, and empties the
/// result tables.
async fn reset(brokers: &str, pool: &PgPool) -> Result<(), RunError> {
    reset_topics(brokers).await?;
    let tables: Vec<&str> = verify::RESULT_TABLES.iter().map(|(t, _)| *t).collect();
    sqlx::query(&format!(
        "TRUNCATE {}, kpi_progress CASCADE",
        tables.join(", ")
    ))
    .execute(pool)
    .await
    .map_err(|e| op_error("emptying the result tables")(e.to_string()))?;
    Ok(())
}

/// Deletes the fleet's topics (when they exist) and creates them again with
/// the run's partitions.
pub async fn reset_topics(brokers: &str) -> Result<(), RunError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| op_error(format!("connecting an admin client to {brokers}"))(e.to_string()))?;
    let topics = all_topics();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // Topics that do not exist yet answer with an error of their own: fine.
    let _ = admin.delete_topics(&refs, &options).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet_runtime::kafka::ensure_topics(brokers, &topics, PARTITIONS)
        .await
        .map_err(|e| op_error("creating the fleet's topics")(e.to_string()))?;
    Ok(())
}

/// Writes every result table's canonical rows into `dir`, a file each.
async fn keep_results(pool: &PgPool, dir: &std::path::Path) -> Result<(), RunError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| op_error(format!("creating {}", dir.display()))(e.to_string()))?;
    for (table, skip) in verify::RESULT_TABLES {
        let rows = verify::canonical_rows(pool, table, skip).await?;
        let path = dir.join(format!("{table}.tsv"));
        let mut text = rows.join("\n");
        text.push('\n');
        std::fs::write(&path, text)
            .map_err(|e| op_error(format!("writing {}", path.display()))(e.to_string()))?;
    }
    Ok(())
}

/// A worker container of a run, removed when dropped.
struct RunningWorker {
    worker: String,
    image: String,
    container: ContainerAsync<GenericImage>,
    /// When the container was asked for.
    created: Instant,
    startup_ms: f64,
}

#[allow(clippy::too_many_arguments)]
async fn run_once(
    engine: &Engine,
    options: &RunOptions,
    broker: &Broker,
    postgres: &Postgres,
    pool: &PgPool,
    strategy: Strategy,
    base: Base,
    run_id: &str,
) -> Result<RunFigures, RunError> {
    reset(&broker.bootstrap_servers, pool).await?;
    let plans: HashMap<String, String> = strategy::images(strategy)
        .into_iter()
        .map(|p| (p.name.clone(), p.tag(strategy, base)))
        .collect();
    let mut workers = Vec::new();
    for assignment in strategy::assignments(strategy) {
        let tag = plans[&assignment.image].clone();
        workers.push(
            start_worker(
                &tag,
                assignment.worker,
                &assignment.command,
                broker,
                postgres,
                run_id,
            )
            .await?,
        );
    }
    for worker in &mut workers {
        worker.startup_ms = wait_healthy(worker).await?;
    }
    let ids: Vec<String> = workers
        .iter()
        .map(|w| w.container.id().to_string())
        .collect();
    let peaks = Arc::new(Mutex::new(HashMap::new()));
    let sampler = tokio::spawn(sample_stats(engine.clone(), ids.clone(), peaks.clone()));

    let feed_started = Instant::now();
    let produced_at = feed(&broker.bootstrap_servers, &options.lines, options.rate).await?;
    let lag_sampler = tokio::spawn(sample_lag(
        broker.bootstrap_servers.clone(),
        run_id.to_string(),
        feed_started,
    ));
    let waiting_from = feed_started.elapsed();
    let (digests, drained) = pipeline::wait_until_finished(
        &broker.bootstrap_servers,
        pool,
        PARTITIONS,
        run_id,
        Duration::from_secs(2),
        FINISH_LIMIT,
    )
    .await?;
    // The moment every input was first found consumed, from the feed's start.
    let drain = waiting_from + drained;
    let lag = lag_sampler.await.unwrap_or_default();
    sampler.abort();
    let _ = sampler.await;
    let peaks = std::mem::take(&mut *peaks.lock().unwrap_or_else(PoisonError::into_inner));
    if peaks.len() < ids.len() {
        warn!(
            sampled = peaks.len(),
            workers = ids.len(),
            "the engine gave no memory figures for some workers; their peak memory reads 0"
        );
    }
    let cpu = cpu_seconds(engine, &ids).await;
    let latencies = latencies(pool, &options.lines, &produced_at).await?;
    let mismatches = match (&options.expected, options.is_fixture) {
        (Some(expected), true) => verify::compare(&expected.tables, &digests),
        _ => Vec::new(),
    };
    if let Some(dir) = &options.results_dir {
        let dir = dir.join(format!("{}-{}{run_id}", strategy.name(), base.name()));
        keep_results(pool, &dir).await?;
        if !mismatches.is_empty() {
            warn!(
                strategy = strategy.name(),
                base = base.name(),
                results = %dir.display(),
                "results differ from the expected outputs; the tables are kept for a diff"
            );
        }
    }
    let figures = RunFigures {
        events: options.lines.len(),
        throughput_eps: options.lines.len() as f64 / drain.as_secs_f64().max(1e-9),
        drain_seconds: drain.as_secs_f64(),
        latency_p50_ms: quantile(&latencies, 0.50),
        latency_p95_ms: quantile(&latencies, 0.95),
        latency_p99_ms: quantile(&latencies, 0.99),
        latency_samples: latencies.len(),
        lag,
        workers: workers
            .iter()
            .zip(&ids)
            .map(|(w, id)| WorkerFigures {
                worker: w.worker.clone(),
                image: w.image.clone(),
                startup_ms: w.startup_ms,
                peak_memory_bytes: peaks.get(id).copied().unwrap_or(0) as f64,
                cpu_seconds: cpu.get(id).copied().unwrap_or(0.0),
            })
            .collect(),
        digests,
        mismatches,
    };
    info!(
        strategy = strategy.name(),
        base = base.name(),
        throughput_eps = figures.throughput_eps,
        p95_ms = figures.latency_p95_ms,
        "run finished"
    );
    drop(workers);
    Ok(figures)
}

async fn start_worker(
    tag: &str,
    worker: &str,
    command: &[String],
    broker: &Broker,
    postgres: &Postgres,
    run_id: &str,
) -> Result<RunningWorker, RunError> {
    let (name, version) = split_reference(tag);
    let mut request = GenericImage::new(name, version)
        .with_exposed_port(9100.tcp())
        .with_wait_for(WaitFor::Nothing)
        .with_network(RUN_PREFIX)
        .with_container_name(format!("{RUN_PREFIX}-{worker}"))
        .with_env_var("KAFKA_BROKERS", &broker.network_bootstrap_servers)
        .with_env_var("DATABASE_URL", &postgres.network_url)
        .with_env_var("KAFKA_GROUP_ID", format!("{worker}{run_id}"))
        // Static membership, one member per group, as a StatefulSet's pods
        // would have: with dynamic members, tansu 0.6.0 sometimes holds a
        // group's first join back for about 13 s (the pipeline then waits on
        // one worker), which made throughput swing by a factor of four
        // between identical runs.
        .with_env_var("KAFKA_GROUP_INSTANCE_ID", format!("{worker}{run_id}"))
        .with_env_var("KAFKA_PARTITIONS", PARTITIONS.to_string())
        .with_env_var("TICK_INTERVAL_MS", "500")
        .with_env_var("LOG_FORMAT", "json")
        .with_env_var("RUST_LOG", "warn");
    if !command.is_empty() {
        request = request.with_cmd(command.to_vec());
    }
    let created = Instant::now();
    let container = request.start().await.map_err(|e| RunError::Worker {
        worker: worker.to_string(),
        image: tag.to_string(),
        problem: format!("starting the container: {e}"),
    })?;
    Ok(RunningWorker {
        worker: worker.to_string(),
        image: tag.to_string(),
        container,
        created,
        startup_ms: 0.0,
    })
}

/// Polls `/healthz` until it answers 200; returns the startup time in ms.
async fn wait_healthy(worker: &RunningWorker) -> Result<f64, RunError> {
    let fail = |problem: String| RunError::Worker {
        worker: worker.worker.clone(),
        image: worker.image.clone(),
        problem,
    };
    let port = worker
        .container
        .get_host_port_ipv4(9100.tcp())
        .await
        .map_err(|e| fail(format!("finding the /healthz port: {e}")))?;
    loop {
        if healthz(port).await {
            return Ok(worker.created.elapsed().as_secs_f64() * 1000.0);
        }
        if worker.created.elapsed() > READY_LIMIT {
            return Err(fail(format!(
                "/healthz did not answer 200 within {READY_LIMIT:?}; see `docker logs {RUN_PREFIX}-{}`",
                worker.worker
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `GET /healthz` on the host port answers 200.
async fn healthz(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = b"GET /healthz HTTP/1.1\r\nHost: fleetbench\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response));
    matches!(read.await, Ok(Ok(_))) && response.starts_with(b"HTTP/1.1 200")
}

/// Highest memory use of each container, sampled about twice a second into
/// `peaks` until the task is aborted (the map outlives the task, so the
/// samples survive the abort).
async fn sample_stats(engine: Engine, ids: Vec<String>, peaks: Arc<Mutex<HashMap<String, u64>>>) {
    loop {
        for id in &ids {
            if let Some(stats) = stats_once(&engine, id).await {
                if let Some(used) = stats.memory_stats.as_ref().and_then(working_set) {
                    let mut peaks = peaks.lock().unwrap_or_else(PoisonError::into_inner);
                    let peak = peaks.entry(id.clone()).or_insert(0);
                    *peak = (*peak).max(used);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A container's memory in use as `docker stats` shows it: the cgroup's
/// usage less its inactive page cache (`total_inactive_file` on cgroup v1,
/// `inactive_file` on v2), which the kernel reclaims first. `None` when the
/// engine gives no usage.
fn working_set(memory: &ContainerMemoryStats) -> Option<u64> {
    let usage = memory.usage?;
    let inactive = memory
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

/// One stats reading of a container, without the engine's second sample
/// for a CPU rate; `None` when the engine gives none (the container is gone).
async fn stats_once(engine: &Engine, id: &str) -> Option<ContainerStatsResponse> {
    let options = StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(true)
        .build();
    engine.client.stats(id, Some(options)).next().await?.ok()
}

/// CPU seconds each container has used.
async fn cpu_seconds(engine: &Engine, ids: &[String]) -> HashMap<String, f64> {
    let mut used = HashMap::new();
    for id in ids {
        if let Some(stats) = stats_once(engine, id).await {
            let ns = stats
                .cpu_stats
                .and_then(|c| c.cpu_usage)
                .and_then(|u| u.total_usage)
                .unwrap_or(0);
            used.insert(id.clone(), ns as f64 / 1e9);
        }
    }
    used
}

/// Lag over time, about once a second, until every input is consumed (or
/// the finish limit passes); a sample the broker could not answer is -1.
async fn sample_lag(brokers: String, run_id: String, started: Instant) -> Vec<(f64, i64)> {
    let task = tokio::task::spawn_blocking(move || {
        let mut samples = Vec::new();
        loop {
            let lag = pipeline::pending_inputs(&brokers, PARTITIONS, &run_id)
                .map(|p| p.iter().map(|(_, _, c, e)| e - c).sum::<i64>())
                .unwrap_or(-1);
            samples.push((started.elapsed().as_secs_f64(), lag));
            if lag == 0 || started.elapsed() > FINISH_LIMIT {
                return samples;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    task.await.unwrap_or_default()
}

/// Produces `lines` keyed by entity, in order, as fast as possible or at
/// `rate` events/s; returns each event id's produce time (ms since the
/// epoch).
async fn feed(
    brokers: &str,
    lines: &[String],
    rate: Option<u64>,
) -> Result<HashMap<String, i64>, RunError> {
    let ids: Vec<Option<String>> = lines
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("event_id")?.as_str().map(str::to_string))
        })
        .collect();
    let mut produced_at = HashMap::with_capacity(lines.len());
    crate::feed::produce_lines_paced(
        brokers,
        fleet_runtime::events::TELEMETRY_RAW,
        lines,
        rate,
        |index| {
            if let Some(id) = &ids[index] {
                produced_at.entry(id.clone()).or_insert_with(now_ms);
            }
        },
    )
    .await
    .map_err(|e| op_error("feeding the fixture")(e.to_string()))?;
    Ok(produced_at)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// End-to-end latencies, ms, sorted: each fed event's produce time to the
/// time its KPI window was written.
async fn latencies(
    pool: &PgPool,
    lines: &[String],
    produced_at: &HashMap<String, i64>,
) -> Result<Vec<f64>, RunError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT window_id, (extract(epoch FROM written_at) * 1000)::bigint FROM kpi_windows",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| op_error("reading when KPI windows were written")(e.to_string()))?;
    let written: BTreeMap<String, i64> = rows.into_iter().collect();
    let window_ms = 60_000;
    let mut latencies = Vec::new();
    for line in lines {
        let Ok(event) = serde_json::from_str::<fleet_runtime::events::RawTelemetry>(line) else {
            continue;
        };
        let start = event.ts_ms - event.ts_ms.rem_euclid(window_ms);
        let id = fleet_runtime::events::KpiWindow::id_for(&event.entity, &event.metric, start);
        if let (Some(at), Some(produced)) = (written.get(&id), produced_at.get(&event.event_id)) {
            latencies.push((at - produced) as f64);
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// The broker's produce-to-consume rate with rdkafka alone, and
/// PostgreSQL's bulk insert rate, on the same number of events.
async fn measure_ceiling(
    brokers: &str,
    pool: &PgPool,
    lines: &[String],
) -> Result<Ceiling, RunError> {
    let topic = "fleetbench.ceiling";
    fleet_runtime::kafka::ensure_topics(brokers, &[topic.to_string()], PARTITIONS)
        .await
        .map_err(|e| op_error("creating the ceiling topic")(e.to_string()))?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("fleetbench-ceiling-{}", now_ms()))
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| op_error("creating the ceiling consumer")(e.to_string()))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| op_error("subscribing to the ceiling topic")(e.to_string()))?;
    // Join the group before producing, so that `latest` is before the probe.
    let joined = Instant::now();
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0
        && joined.elapsed() < Duration::from_secs(30)
    {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let started = Instant::now();
    let consume = tokio::task::spawn_blocking({
        let expected = lines.len();
        move || {
            let mut seen = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            while seen < expected && Instant::now() < deadline {
                if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                    seen += 1;
                }
            }
            seen
        }
    });
    crate::feed::produce_lines_paced(brokers, topic, lines, None, |_| {})
        .await
        .map_err(|e| op_error("producing the ceiling probe")(e.to_string()))?;
    let seen = consume
        .await
        .map_err(|e| op_error("consuming the ceiling probe")(e.to_string()))?;
    let broker_elapsed = started.elapsed();
    if seen < lines.len() {
        return Err(op_error("consuming the ceiling probe")(format!(
            "{seen} of {} messages came back within 120 s",
            lines.len()
        )));
    }
    let started = Instant::now();
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| op_error("starting the insert probe")(e.to_string()))?;
    sqlx::query(
        "CREATE TEMP TABLE fleetbench_ceiling (id TEXT PRIMARY KEY, body TEXT) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| op_error("creating the insert probe table")(e.to_string()))?;
    for (chunk_index, chunk) in lines.chunks(500).enumerate() {
        let ids: Vec<String> = (0..chunk.len())
            .map(|i| format!("{chunk_index}-{i}"))
            .collect();
        let bodies: Vec<String> = chunk.to_vec();
        sqlx::query("INSERT INTO fleetbench_ceiling SELECT * FROM UNNEST($1::text[], $2::text[])")
            .bind(&ids)
            .bind(&bodies)
            .execute(&mut *tx)
            .await
            .map_err(|e| op_error("inserting the probe rows")(e.to_string()))?;
    }
    tx.commit()
        .await
        .map_err(|e| op_error("committing the insert probe")(e.to_string()))?;
    let postgres_elapsed = started.elapsed();
    Ok(Ceiling {
        broker_eps: lines.len() as f64 / broker_elapsed.as_secs_f64(),
        postgres_rows_per_s: lines.len() as f64 / postgres_elapsed.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_of_repeats_gives_min_median_and_max() {
        let spread = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((spread.min, spread.median, spread.max), (1.0, 2.0, 3.0));
        assert_eq!(Spread::of(&[1.0, 2.0, 3.0, 4.0]).median, 2.5);
        assert_eq!(Spread::of(&[]).max, 0.0);
    }

    #[test]
    fn a_working_set_is_the_usage_less_the_inactive_page_cache() {
        let memory = |usage, key: &str, inactive| ContainerMemoryStats {
            usage,
            stats: Some(HashMap::from([(key.to_string(), inactive)])),
            ..Default::default()
        };
        // cgroup v1 names the cache total_inactive_file, v2 inactive_file.
        assert_eq!(
            working_set(&memory(Some(9_000), "total_inactive_file", 2_000)),
            Some(7_000)
        );
        assert_eq!(
            working_set(&memory(Some(9_000), "inactive_file", 10_000)),
            Some(0)
        );
        assert_eq!(working_set(&memory(Some(9_000), "rss", 4_000)), Some(9_000));
        assert_eq!(working_set(&memory(None, "inactive_file", 1)), None);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.50), 50.0);
        assert_eq!(quantile(&values, 0.95), 95.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }
}
