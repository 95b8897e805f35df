//! The stream worker loop: read a batch, parse it (dead-lettering what does
//! not parse), let the [`Processor`] write its results in one transaction,
//! publish its outputs, then commit the offsets. Every step before the
//! commit can be replayed: processors write idempotently, keyed by event or
//! window id.
//!
//! A batch whose transaction fails is retried event by event: an event that
//! fails alone with a database error of its own (a constraint, bad data)
//! is dead-lettered with that error, and the rest go through. A failure to
//! reach the database or the broker is retried with backoff until the
//! shutdown, without committing anything.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};

use crate::config::{ConfigError, LogFormat, RuntimeConfig};
use crate::db::{self, DbError};
use crate::dlq::{self, DeadLetter};
use crate::kafka::{self, KafkaOpError};
use crate::metrics::{self, Metrics};
use crate::shutdown::Shutdown;

/// How long to wait before retrying a batch after an infrastructure error.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// How long an output may wait for the broker's acknowledgement.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// An event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// Partitioning key (an entity or id), so related events stay ordered.
    pub key: String,
    /// JSON payload.
    pub payload: Vec<u8>,
}

impl Output {
    /// Serialises `value` as the JSON payload of an output.
    pub fn json(topic: &str, key: impl Into<String>, value: &impl serde::Serialize) -> Self {
        Self {
            topic: topic.to_string(),
            key: key.into(),
            payload: serde_json::to_vec(value).expect("output types serialise to JSON"),
        }
    }
}

/// A parsed event, or why it was rejected.
pub type Outcome<E> = Result<E, String>;

/// One worker's domain logic, driven by [`run`].
pub trait Processor: Send + Sync + 'static {
    /// What a message parses into.
    type Event: Send;

    /// The worker's name: consumer group, metrics label, log field.
    fn name(&self) -> &'static str;

    /// Topics read.
    fn input_topics(&self) -> Vec<String>;

    /// Topics written.
    fn output_topics(&self) -> Vec<String>;

    /// Parses and validates one message; `Err(reason)` dead-letters it.
    fn parse(&self, topic: &str, payload: &[u8]) -> Outcome<Self::Event>;

    /// Writes the results of `events` inside `tx` and returns the events to
    /// publish once the transaction is committed.
    fn process(
        &mut self,
        events: Vec<Self::Event>,
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<Vec<Output>, ProcessError>> + Send;

    /// Called once the outputs of the last `process` are acknowledged and
    /// before the offsets are committed: the place to mark an outbox.
    fn published(
        &mut self,
        _pool: &PgPool,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async { Ok(()) }
    }
}

/// Why a batch could not be processed now.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The database failed: retried when it is about reaching it, otherwise
    /// the event responsible is isolated and dead-lettered.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Something the batch depends on is not there yet (a model another
    /// worker trains): the batch is retried after a pause, nothing is
    /// committed in between.
    #[error("waiting for {0}")]
    NotReady(String),
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The environment is not a valid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Kafka clients or topics could not be set up.
    #[error(transparent)]
    Kafka(#[from] KafkaOpError),
    /// The metrics endpoint could not listen.
    #[error("listening for /metrics and /healthz on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Everything the loop holds while it runs.
struct Context {
    name: &'static str,
    pool: PgPool,
    consumer: StreamConsumer,
    producer: FutureProducer,
    metrics: Metrics,
}

/// Runs `processor` until the shutdown: sets up the schema, topics, clients
/// and endpoint, then processes batches. Returns after the last batch's
/// offsets are committed.
pub async fn run<P: Processor>(
    mut processor: P,
    config: RuntimeConfig,
    mut shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    let name = processor.name();
    let ctx = start(&processor, &config, &shutdown).await?;
    info!(worker = name, inputs = ?processor.input_topics(), "ready");
    while !shutdown.is_requested() {
        let batch = match kafka::next_batch(
            &ctx.consumer,
            config.batch_max_events,
            config.batch_max_wait,
            &mut shutdown,
        )
        .await
        {
            Ok(batch) => batch,
            Err(error) => {
                warn!(worker = name, %error, "reading from Kafka failed; retrying");
                ctx.metrics.errors.inc();
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
        };
        if !batch.is_empty() {
            handle_batch(&ctx, &mut processor, &batch, &shutdown).await;
        }
        if let Ok(lag) = kafka::lag(&ctx.consumer) {
            ctx.metrics.consumer_lag.set(lag);
        }
    }
    ctx.metrics.set_ready(false);
    info!(worker = name, "stopped after committing its last batch");
    Ok(())
}

/// Runs `processor` as this process's worker: configuration from the
/// environment, logging, SIGTERM and SIGINT. Returns the exit code: 0 after
/// a clean stop, 2 for a configuration error, 1 for any other error.
pub async fn run_process<P: Processor>(processor: P) -> i32 {
    run_configured(processor.name(), Ok(processor)).await
}

/// Runs the worker `name` as this process's worker once its own settings
/// are read: a settings error is printed naming the variable and gives exit
/// code 2, as a runtime configuration error does.
pub async fn run_configured<P: Processor>(name: &str, processor: Result<P, ConfigError>) -> i32 {
    let setup = processor.and_then(|p| Ok((p, RuntimeConfig::from_env(name)?)));
    serve(
        name,
        setup,
        |(_, config)| config.log_format,
        |(processor, config), shutdown| run(processor, config, shutdown),
    )
    .await
}

/// What every worker process does around its loop, streaming or periodic:
/// a configuration error is printed and gives exit code 2; otherwise logs
/// are set up, SIGTERM and SIGINT ask the loop to stop, and the loop's end
/// gives the exit code: 0 after a clean stop, 2 for a configuration error
/// it found, 1 for any other error (logged).
pub(crate) async fn serve<S, F>(
    name: &str,
    setup: Result<S, ConfigError>,
    log_format: impl FnOnce(&S) -> LogFormat,
    run: impl FnOnce(S, Shutdown) -> F,
) -> i32
where
    F: Future<Output = Result<(), RuntimeError>>,
{
    let setup = match setup {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("{name}: {error}");
            return 2;
        }
    };
    crate::logging::init(log_format(&setup));
    let (trigger, listener) = crate::shutdown::channel();
    trigger.on_signals();
    match run(setup, listener).await {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(worker = name, %error, "stopped");
            if matches!(error, RuntimeError::Config(_)) {
                2
            } else {
                1
            }
        }
    }
}

/// Runs `processor` in this process until its group has committed
/// `messages` offsets on the `partitions` partitions of `topic` (or
/// `timeout` passes), then stops it as SIGTERM would. For tests and for
/// embedding a worker in a tool; returns the offsets committed at the end.
pub async fn run_until_committed<P: Processor>(
    processor: P,
    config: RuntimeConfig,
    topic: &str,
    partitions: i32,
    messages: i64,
    timeout: Duration,
) -> Result<i64, RuntimeError> {
    let (brokers, group) = (config.kafka_brokers.clone(), config.group_id.clone());
    let (trigger, listener) = crate::shutdown::channel();
    let worker = tokio::spawn(run(processor, config, listener));
    let committed = || kafka::committed_total(&brokers, &group, topic, partitions).unwrap_or(0);
    let started = Instant::now();
    while committed() < messages && started.elapsed() < timeout && !worker.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    trigger.trip();
    worker.await.expect("the worker task does not panic")?;
    Ok(committed())
}

async fn start<P: Processor>(
    processor: &P,
    config: &RuntimeConfig,
    shutdown: &Shutdown,
) -> Result<Context, RuntimeError> {
    let name = processor.name();
    let metrics = Metrics::new(name);
    metrics::serve(config.metrics_addr, metrics.clone(), shutdown.clone())
        .await
        .map_err(|source| RuntimeError::Listen {
            addr: config.metrics_addr,
            source,
        })?;
    let pool = db::connect(&config.database_url, config.db_pool_size).await?;
    db::migrate(&pool).await?;
    let inputs = processor.input_topics();
    let mut topics = inputs.clone();
    topics.extend(processor.output_topics());
    topics.extend(inputs.iter().map(|t| dlq::topic_of(t)));
    kafka::ensure_topics(&config.kafka_brokers, &topics, config.partitions).await?;
    let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let consumer = kafka::consumer(
        &config.kafka_brokers,
        &config.group_id,
        config.group_instance_id.as_deref(),
        &input_refs,
    )?;
    let producer = kafka::producer(&config.kafka_brokers)?;
    metrics.set_ready(true);
    Ok(Context {
        name,
        pool,
        consumer,
        producer,
        metrics,
    })
}

/// Processes one batch until it is committed, or until the shutdown stops
/// the retries (then nothing is committed and the batch is read again).
async fn handle_batch<P: Processor>(
    ctx: &Context,
    processor: &mut P,
    batch: &[OwnedMessage],
    shutdown: &Shutdown,
) {
    let started = Instant::now();
    ctx.metrics.events_in.inc_by(batch.len() as u64);
    loop {
        match try_batch(ctx, processor, batch).await {
            Ok(()) => break,
            Err(error) => {
                ctx.metrics.errors.inc();
                warn!(worker = ctx.name, %error, events = batch.len(), "batch failed; retrying");
                if shutdown.is_requested() {
                    return;
                }
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }
    ctx.metrics
        .batch_seconds
        .observe(started.elapsed().as_secs_f64());
}

/// One attempt: transaction, outputs, dead letters, commit.
async fn try_batch<P: Processor>(
    ctx: &Context,
    processor: &mut P,
    batch: &[OwnedMessage],
) -> Result<(), String> {
    let mut letters = Vec::new();
    let mut parsed = Vec::new();
    for message in batch {
        match processor.parse(message.topic(), message.payload().unwrap_or_default()) {
            Ok(event) => parsed.push((message, event)),
            Err(reason) => letters.push(DeadLetter::new(message, reason)),
        }
    }
    let outputs = match write(ctx, processor, parsed.into_iter().map(|(_, e)| e).collect()).await {
        Ok(outputs) => outputs,
        Err(error) if is_transient(&error) => return Err(error.to_string()),
        Err(_) => isolate(ctx, processor, batch, &mut letters).await?,
    };
    publish(ctx, &outputs).await?;
    processor
        .published(&ctx.pool)
        .await
        .map_err(|e| format!("marking outputs published: {e}"))?;
    publish_dead_letters(ctx, &letters).await?;
    kafka::commit(&ctx.consumer, batch).map_err(|e| format!("committing offsets: {e}"))
}

/// Reparses and writes the batch one event at a time, dead-lettering each
/// event whose own write fails for a reason other than reachability.
async fn isolate<P: Processor>(
    ctx: &Context,
    processor: &mut P,
    batch: &[OwnedMessage],
    letters: &mut Vec<DeadLetter>,
) -> Result<Vec<Output>, String> {
    let mut outputs = Vec::new();
    for message in batch {
        let Ok(event) = processor.parse(message.topic(), message.payload().unwrap_or_default())
        else {
            continue;
        };
        match write(ctx, processor, vec![event]).await {
            Ok(more) => outputs.extend(more),
            Err(error) if is_transient(&error) => return Err(error.to_string()),
            Err(error) => letters.push(DeadLetter::new(
                message,
                format!("rejected by the database: {error}"),
            )),
        }
    }
    Ok(outputs)
}

async fn write<P: Processor>(
    ctx: &Context,
    processor: &mut P,
    events: Vec<P::Event>,
) -> Result<Vec<Output>, ProcessError> {
    let mut tx = ctx.pool.begin().await?;
    let outputs = processor.process(events, &mut tx).await?;
    tx.commit().await?;
    Ok(outputs)
}

/// Whether an error is about reaching the database, or waiting for another
/// worker, rather than about the data: those are retried, the others
/// isolate the event responsible.
fn is_transient(error: &ProcessError) -> bool {
    match error {
        ProcessError::NotReady(_) => true,
        ProcessError::Db(error) => !matches!(
            error,
            sqlx::Error::Database(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)
        ),
    }
}

async fn publish(ctx: &Context, outputs: &[Output]) -> Result<(), String> {
    let sends = outputs.iter().map(|output| {
        ctx.producer.send(
            FutureRecord::to(&output.topic)
                .key(&output.key)
                .payload(&output.payload),
            PRODUCE_TIMEOUT,
        )
    });
    try_join_all(sends)
        .await
        .map_err(|(error, _)| format!("publishing outputs: {error}"))?;
    ctx.metrics.events_out.inc_by(outputs.len() as u64);
    Ok(())
}

async fn publish_dead_letters(ctx: &Context, letters: &[DeadLetter]) -> Result<(), String> {
    let sends = letters.iter().map(|letter| {
        let mut record = FutureRecord::to(&letter.topic)
            .payload(&letter.payload)
            .headers(letter.headers(ctx.name));
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        ctx.producer.send(record, PRODUCE_TIMEOUT)
    });
    try_join_all(sends)
        .await
        .map_err(|(error, _)| format!("publishing dead letters: {error}"))?;
    for letter in letters {
        warn!(worker = ctx.name, origin = %letter.origin, reason = %letter.reason, "dead-lettered");
    }
    ctx.metrics.dead_letters.inc_by(letters.len() as u64);
    Ok(())
}
