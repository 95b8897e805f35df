//! The periodic worker loop, for workers that read the database on a timer
//! instead of a topic (model training, retention): every interval, one
//! [`Task::tick`], with the same schema, `/metrics`, `/healthz`, logging and
//! shutdown as the stream workers. A tick does its work in transactions of
//! its own, so a crash between two ticks, or inside one, loses nothing: the
//! next tick finds what is left to do in the database.

use std::future::Future;
use std::time::Instant;

use sqlx::PgPool;
use tracing::{info, warn};

use crate::config::{ConfigError, PeriodicConfig};
use crate::db;
use crate::metrics::{self, Metrics};
use crate::shutdown::Shutdown;
use crate::worker::{serve, RuntimeError};

/// One periodic worker's domain logic, driven by [`run_periodic`].
pub trait Task: Send + Sync + 'static {
    /// The worker's name: metrics label, log field.
    fn name(&self) -> &'static str;

    /// One round of work; returns how many items it wrote (models trained,
    /// rows compacted), for the metrics and the log.
    fn tick(&mut self, pool: &PgPool) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

/// Runs `task` every `config.interval` until the shutdown; a tick that
/// fails is logged, counted and tried again at the next interval. Returns
/// once the tick in progress at the shutdown has finished.
pub async fn run_periodic<T: Task>(
    mut task: T,
    config: PeriodicConfig,
    mut shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    let name = task.name();
    let metrics = Metrics::new(name);
    metrics::serve(config.metrics_addr, metrics.clone(), shutdown.clone())
        .await
        .map_err(|source| RuntimeError::Listen {
            addr: config.metrics_addr,
            source,
        })?;
    let pool = db::connect(&config.database_url, config.db_pool_size).await?;
    db::migrate(&pool).await?;
    metrics.set_ready(true);
    info!(
        worker = name,
        interval_ms = config.interval.as_millis() as u64,
        "ready"
    );
    while !shutdown.is_requested() {
        let started = Instant::now();
        match task.tick(&pool).await {
            Ok(written) => {
                metrics.events_out.inc_by(written);
                if written > 0 {
                    info!(worker = name, written, "tick done");
                }
            }
            Err(error) => {
                metrics.errors.inc();
                warn!(worker = name, %error, "tick failed; trying again at the next interval");
            }
        }
        metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = shutdown.requested() => {}
        }
    }
    metrics.set_ready(false);
    info!(worker = name, "stopped");
    Ok(())
}

/// Runs `task` as this process's worker: configuration from the
/// environment, logging, SIGTERM and SIGINT. Returns the exit code: 0 after
/// a clean stop, 2 for a configuration error, 1 for any other error.
pub async fn run_periodic_process<T: Task>(task: T) -> i32 {
    run_periodic_configured(task.name(), Ok(task)).await
}

/// Runs the periodic worker `name` as this process's worker once its own
/// settings are read: a settings error is printed naming the variable and
/// gives exit code 2.
pub async fn run_periodic_configured<T: Task>(name: &str, task: Result<T, ConfigError>) -> i32 {
    let setup = task.and_then(|t| Ok((t, PeriodicConfig::from_env()?)));
    serve(
        name,
        setup,
        |(_, config)| config.log_format,
        |(task, config), shutdown| run_periodic(task, config, shutdown),
    )
    .await
}
