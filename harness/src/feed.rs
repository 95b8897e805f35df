//! Feeding a fleet: JSON lines produced to a topic as fast as the broker
//! takes them, keyed by their `entity` field as agents key telemetry, so
//! each entity's events stay in order on one partition.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// A line could not be produced.
#[derive(Debug, thiserror::Error)]
#[error("producing line {line} to topic '{topic}' on {brokers}: {message}")]
pub struct FeedError {
    /// 1-based line number.
    pub line: usize,
    /// The topic.
    pub topic: String,
    /// The bootstrap servers.
    pub brokers: String,
    /// The client's message.
    pub message: String,
}

/// The partitioning key of a JSON line: its `entity`, or `line-N`.
pub fn key_of(line: &str, index: usize) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|value| value.get("entity")?.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("line-{index}"))
}

/// Produces every line to `topic`, in order per key, and waits for every
/// acknowledgement; returns how many were acknowledged.
pub async fn produce_lines(
    brokers: &str,
    topic: &str,
    lines: &[String],
) -> Result<usize, FeedError> {
    let fail = |line: usize, message: String| FeedError {
        line,
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        message,
    };
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .map_err(|e| fail(0, e.to_string()))?;
    let sends = lines.iter().enumerate().map(|(index, line)| {
        let producer = producer.clone();
        let key = key_of(line, index);
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(line),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| fail(index + 1, e.to_string()))
        }
    });
    futures_util::future::try_join_all(sends).await?;
    Ok(lines.len())
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn lines_are_keyed_by_entity_and_others_by_position() {
        assert_eq!(
            key_of(r#"{"entity":"lon-auth-1","value":1}"#, 3),
            "lon-auth-1"
        );
        assert_eq!(key_of("{not json", 3), "line-3");
        assert_eq!(key_of(r#"{"entity":7}"#, 4), "line-4");
    }
}
