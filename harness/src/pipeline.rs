//! The fleet as one pipeline: its topics, which worker reads which, and how
//! to tell that it has finished with its input (every consumer group has
//! committed up to the end of every topic it reads, and the result tables
//! have stopped changing, which also covers the periodic workers).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use sqlx::PgPool;

use fleet_runtime::events::{
    ALERTS, ALERT_NOTIFICATIONS, ANOMALIES, FORECASTS, KPI_WINDOWS, TELEMETRY_NORMALIZED,
    TELEMETRY_RAW,
};
use fleet_runtime::kafka::committed_total;

use crate::verify::{digest_results, Digests};

/// The stream workers, each with the topics it reads (its consumer group is
/// its name); the periodic workers (model-trainer, retention-compactor)
/// read the database instead.
pub const STREAM_INPUTS: [(&str, &[&str]); 7] = [
    ("data-ingestor", &[TELEMETRY_RAW]),
    ("kpi-worker", &[TELEMETRY_NORMALIZED]),
    ("anomaly-detector", &[KPI_WINDOWS]),
    ("forecaster", &[KPI_WINDOWS]),
    ("sla-reporter", &[KPI_WINDOWS]),
    ("alert-manager", &[ANOMALIES, FORECASTS]),
    ("incident-correlator", &[ALERTS]),
];

/// Every topic of the fleet, dead-letter topics of the inputs included.
pub fn all_topics() -> Vec<String> {
    let mut topics: Vec<String> = [
        TELEMETRY_RAW,
        TELEMETRY_NORMALIZED,
        KPI_WINDOWS,
        ANOMALIES,
        FORECASTS,
        ALERTS,
        ALERT_NOTIFICATIONS,
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    let inputs: Vec<String> = STREAM_INPUTS
        .iter()
        .flat_map(|(_, inputs)| inputs.iter())
        .map(|t| fleet_runtime::dlq::topic_of(t))
        .collect();
    for dlq in inputs {
        if !topics.contains(&dlq) {
            topics.push(dlq);
        }
    }
    topics
}

/// The pipeline did not finish in time, or could not be observed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The broker could not be asked.
    #[error("reading {what} from the broker at {brokers}: {message}")]
    Broker {
        /// What was read.
        what: String,
        /// The bootstrap servers.
        brokers: String,
        /// The client's message.
        message: String,
    },
    /// The results could not be read.
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    /// Work was still pending when the time ran out.
    #[error("the pipeline did not finish within {limit:?}: {pending}")]
    Timeout {
        /// The limit.
        limit: Duration,
        /// What was still pending.
        pending: String,
    },
}

/// Messages in `topic` (the sum of the high watermarks of its partitions).
pub fn topic_end(brokers: &str, topic: &str) -> Result<i64, PipelineError> {
    let fail = |message: String| PipelineError::Broker {
        what: format!("the end offsets of '{topic}'"),
        brokers: brokers.to_string(),
        message,
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| fail(e.to_string()))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| fail(e.to_string()))?;
    let mut total = 0;
    for t in metadata.topics() {
        for partition in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
                .map_err(|e| fail(e.to_string()))?;
            total += high;
        }
    }
    Ok(total)
}

/// The (group, topic, committed, end) of every stream worker input that is
/// not yet consumed to its end; each worker's group is its name followed by
/// `group_suffix`.
pub fn pending_inputs(
    brokers: &str,
    partitions: i32,
    group_suffix: &str,
) -> Result<Vec<(String, String, i64, i64)>, PipelineError> {
    let mut pending = Vec::new();
    for (worker, inputs) in STREAM_INPUTS {
        let group = format!("{worker}{group_suffix}");
        let group = group.as_str();
        for topic in inputs {
            let end = topic_end(brokers, topic)?;
            let committed = committed_total(brokers, group, topic, partitions).map_err(|e| {
                PipelineError::Broker {
                    what: format!("offsets of group '{group}'"),
                    brokers: brokers.to_string(),
                    message: e.to_string(),
                }
            })?;
            if committed < end {
                pending.push((group.to_string(), topic.to_string(), committed, end));
            }
        }
    }
    Ok(pending)
}

/// Waits until every group has consumed its inputs to the end and the
/// result tables are unchanged over `settle`; returns their digests and
/// when the inputs were first found consumed.
pub async fn wait_until_finished(
    brokers: &str,
    pool: &PgPool,
    partitions: i32,
    group_suffix: &str,
    settle: Duration,
    limit: Duration,
) -> Result<(Digests, Duration), PipelineError> {
    let started = Instant::now();
    let mut last: Option<Digests> = None;
    let mut drained_at = None;
    loop {
        let pending = pending_inputs(brokers, partitions, group_suffix)?;
        if pending.is_empty() {
            let drained = *drained_at.get_or_insert_with(|| started.elapsed());
            let digests = digest_results(pool).await?;
            if last.as_ref() == Some(&digests) {
                return Ok((digests, drained));
            }
            if started.elapsed() > limit {
                return Err(PipelineError::Timeout {
                    limit,
                    pending: "every input is consumed, but the result tables still change".into(),
                });
            }
            last = Some(digests);
            tokio::time::sleep(settle).await;
        } else {
            drained_at = None;
            last = None;
            if started.elapsed() > limit {
                let pending = pending
                    .iter()
                    .map(|(g, t, c, e)| format!("{g} at {c} of {e} on {t}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(PipelineError::Timeout { limit, pending });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
