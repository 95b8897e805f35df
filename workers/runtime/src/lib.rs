//! What every worker of the fleet shares, so that no worker repeats it:
//! configuration from the environment, the Kafka consumer and producer, the
//! PostgreSQL pool and schema, `/metrics` and `/healthz`, logging, graceful
//! shutdown and dead letters.
//!
//! A stream worker implements [`Processor`] and hands it to [`run`]: the
//! runtime reads a batch, parses it (dead-lettering what does not parse),
//! lets the processor write its results in one transaction, publishes its
//! output events, and only then commits the batch's offsets. A crash at any
//! point therefore replays the batch, and processors write idempotently,
//! keyed by event or window id, so a replay neither loses nor doubles a
//! result.

pub mod config;
pub mod db;
pub mod dlq;
pub mod events;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod periodic;
pub mod shutdown;
pub mod worker;

pub use config::{ConfigError, PeriodicConfig, RuntimeConfig};
pub use periodic::{run_periodic, run_periodic_configured, run_periodic_process, Task};
pub use worker::{
    run, run_configured, run_process, run_until_committed, Outcome, Output, ProcessError,
    Processor, RuntimeError,
};
