//! Feeding a fleet: JSON lines produced to a topic as fast as the broker
//! takes them, keyed by their `entity` field as agents key telemetry, so
//! each entity's events stay in order on one partition.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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
    produce_lines_paced(brokers, topic, lines, None, |_| {}).await
}

/// Produces every line to `topic` in line order, so that each key's lines
/// keep their order on their partition, at `rate` lines/s or as fast as the
/// broker takes them, and waits for every acknowledgement. `handed` sees
/// each line's index the moment the producer has it. Returns how many were
/// acknowledged.
///
/// Lines are handed to the producer one after the other, never from tasks
/// of their own: concurrent sends reach the producer's queue in any order,
/// and a consumer that closes event-time windows would then see an entity's
/// events out of order.
pub async fn produce_lines_paced(
    brokers: &str,
    topic: &str,
    lines: &[String],
    rate: Option<u64>,
    mut handed: impl FnMut(usize),
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
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        if let Some(rate) = rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(index as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let key = key_of(line, index);
        let mut record = FutureRecord::to(topic).key(&key).payload(line);
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(fail(index + 1, error.to_string())),
            }
        };
        handed(index);
        deliveries.push(delivery);
    }
    for (index, delivery) in deliveries.into_iter().enumerate() {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(fail(index + 1, error.to_string())),
            Err(_) => return Err(fail(index + 1, "the producer dropped the message".into())),
        }
    }
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
