//! Kafka through rdkafka: a group consumer that commits only when told, an
//! idempotent producer with acks=all, topic creation, batches, and lag.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::shutdown::Shutdown;

/// A Kafka operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} (brokers {brokers}): {source}")]
pub struct KafkaOpError {
    /// What was being done, with the topic where there is one.
    pub operation: String,
    /// The bootstrap servers.
    pub brokers: String,
    /// rdkafka's error (boxed: it is large, and errors travel in results).
    pub source: Box<KafkaError>,
}

fn op_error(
    operation: impl Into<String>,
    brokers: &str,
) -> impl FnOnce(KafkaError) -> KafkaOpError {
    let operation = operation.into();
    let brokers = brokers.to_string();
    move |source| KafkaOpError {
        operation,
        brokers,
        source: Box::new(source),
    }
}

/// A consumer in `group` that never commits on its own; `instance` makes
/// it a static member of the group.
pub fn consumer(
    brokers: &str,
    group: &str,
    instance: Option<&str>,
    topics: &[&str],
) -> Result<StreamConsumer, KafkaOpError> {
    let mut config = ClientConfig::new();
    if let Some(instance) = instance {
        config.set("group.instance.id", instance);
    }
    let consumer: StreamConsumer = config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .map_err(op_error(
            format!("creating consumer of group '{group}'"),
            brokers,
        ))?;
    consumer
        .subscribe(topics)
        .map_err(op_error(format!("subscribing to {topics:?}"), brokers))?;
    Ok(consumer)
}

/// An idempotent producer that waits for every in-sync replica.
pub fn producer(brokers: &str) -> Result<FutureProducer, KafkaOpError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .map_err(op_error("creating producer", brokers))
}

/// Creates the topics that do not exist yet, with `partitions` partitions.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[String],
    partitions: i32,
) -> Result<(), KafkaOpError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(op_error("creating admin client", brokers))?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(op_error(format!("creating topics {topics:?}"), brokers))?;
    for result in results {
        match result {
            Ok(topic) => tracing::debug!(%topic, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(op_error(format!("creating topic '{topic}'"), brokers)(
                    KafkaError::AdminOp(code),
                ))
            }
        }
    }
    Ok(())
}

/// Reads up to `max` messages, waiting at most `wait` after the first one;
/// returns early, possibly empty, when the shutdown is asked for.
pub async fn next_batch(
    consumer: &StreamConsumer,
    max: usize,
    wait: Duration,
    shutdown: &mut Shutdown,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let mut batch = Vec::new();
    let mut deadline: Option<Instant> = None;
    while batch.len() < max {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            break;
        }
        let received = tokio::select! {
            _ = shutdown.requested() => break,
            _ = tokio::time::sleep(remaining.unwrap_or(Duration::from_secs(1))) => {
                if deadline.is_some() { break } else { continue }
            }
            message = consumer.recv() => message?,
        };
        batch.push(received.detach());
        deadline.get_or_insert_with(|| Instant::now() + wait);
    }
    Ok(batch)
}

/// The offsets to commit after `batch`: one past the last message per partition.
pub fn offsets_after(batch: &[OwnedMessage]) -> TopicPartitionList {
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    for message in batch {
        let entry = next
            .entry((message.topic().to_string(), message.partition()))
            .or_insert(0);
        *entry = (*entry).max(message.offset() + 1);
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        list.add_partition_offset(&topic, partition, Offset::Offset(offset))
            .expect("an absolute offset is always accepted");
    }
    list
}

/// Commits `batch` synchronously: when this returns, the group has it.
pub fn commit(consumer: &StreamConsumer, batch: &[OwnedMessage]) -> Result<(), KafkaError> {
    if batch.is_empty() {
        return Ok(());
    }
    consumer.commit(&offsets_after(batch), CommitMode::Sync)
}

/// Offsets `group` has committed on partitions `0..partitions` of `topic`,
/// added up (a partition with no commit counts 0); read with a client of
/// its own that does not join the group.
pub fn committed_total(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<i64, KafkaOpError> {
    let operation = || format!("reading offsets committed by group '{group}' on '{topic}'");
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .map_err(op_error(operation(), brokers))?;
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .map_err(op_error(operation(), brokers))?;
    Ok(committed
        .elements()
        .iter()
        .map(|element| match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        })
        .sum())
}

/// Messages behind the high watermark over the assigned partitions.
pub fn lag(consumer: &StreamConsumer) -> Result<i64, KafkaError> {
    let position = consumer.position()?;
    let mut lag = 0;
    for element in position.elements() {
        let (_, high) = consumer.fetch_watermarks(
            element.topic(),
            element.partition(),
            Duration::from_secs(2),
        )?;
        let at = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        };
        lag += (high - at).max(0);
    }
    Ok(lag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    fn message(topic: &str, partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            topic.into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn offsets_after_a_batch_point_past_the_last_message_of_each_partition() {
        let batch = [
            message("t", 0, 4),
            message("t", 1, 9),
            message("t", 0, 7),
            message("u", 0, 2),
        ];
        let list = offsets_after(&batch);
        let mut offsets: Vec<_> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition(), e.offset()))
            .collect();
        offsets.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        assert_eq!(
            offsets,
            vec![
                ("t".into(), 0, Offset::Offset(8)),
                ("t".into(), 1, Offset::Offset(10)),
                ("u".into(), 0, Offset::Offset(3)),
            ]
        );
    }
}
