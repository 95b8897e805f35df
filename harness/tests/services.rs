//! The test services against real containers: the bootstrap broker and
//! PostgreSQL started with testcontainers, used with rdkafka and sqlx.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::services::{Broker, Placement, Postgres};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

fn config() -> FleetConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fleetbench.toml");
    FleetConfig::load(&path).expect("the workspace's fleetbench.toml loads")
}

async fn start_broker() -> Broker {
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    Broker::start(&engine, &config(), &Placement::default())
        .await
        .expect("the broker starts")
}

fn producer(broker: &Broker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("a producer is created")
}

fn consumer(broker: &Broker, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("a consumer is created");
    consumer
        .subscribe(&[topic])
        .expect("the consumer subscribes");
    consumer
}

async fn produce_keyed(broker: &Broker, topic: &str, count: usize) {
    let producer = producer(broker);
    let sends = (0..count).map(|i| {
        let producer = producer.clone();
        let topic = topic.to_string();
        async move {
            let key = format!("key-{i:05}");
            let payload = format!("{{\"seq\":{i}}}");
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("the broker acknowledges the message");
        }
    });
    futures_util::future::join_all(sends).await;
}

/// Reads `count` messages and returns their keys, committing synchronously
/// after every `commit_every` messages and at the end.
async fn consume_keys(consumer: &StreamConsumer, count: usize, commit_every: usize) -> Vec<String> {
    let mut keys = Vec::with_capacity(count);
    while keys.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("no message within 60 s after {} of {count}", keys.len()))
            .expect("the consumer receives");
        let key = String::from_utf8(message.key().expect("every message has a key").to_vec())
            .expect("keys are UTF-8");
        keys.push(key);
        if keys.len() % commit_every == 0 || keys.len() == count {
            consumer
                .commit_consumer_state(CommitMode::Sync)
                .expect("offsets are committed");
        }
    }
    keys
}

fn committed(broker: &Broker, group: &str, topic: &str, partitions: i32) -> i64 {
    fleet_runtime::kafka::committed_total(&broker.bootstrap_servers, group, topic, partitions)
        .expect("committed offsets are read")
}

fn assert_each_key_once(keys: &[String], expected: usize) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for key in keys {
        *seen.entry(key).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(doubled.is_empty(), "keys read more than once: {doubled:?}");
    assert_eq!(seen.len(), expected, "distinct keys read");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_keyed_messages_come_back_through_a_consumer_group() {
    let broker = start_broker().await;
    let topic = "services.keyed";
    broker
        .create_topics(&[topic], 3)
        .await
        .expect("topic is created");

    produce_keyed(&broker, topic, 10_000).await;
    let consumer = consumer(&broker, "services-keyed", topic);
    let keys = consume_keys(&consumer, 10_000, 500).await;

    assert_each_key_once(&keys, 10_000);
    assert_eq!(committed(&broker, "services-keyed", topic, 3), 10_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_consumer_resumes_after_its_last_committed_offset() {
    let broker = start_broker().await;
    let topic = "services.resume";
    broker
        .create_topics(&[topic], 2)
        .await
        .expect("topic is created");
    produce_keyed(&broker, topic, 1_000).await;

    let first = consumer(&broker, "services-resume", topic);
    let mut keys = consume_keys(&first, 400, 100).await;
    drop(first);

    let second = consumer(&broker, "services-resume", topic);
    let rest = consume_keys(&second, 600, 100).await;
    let extra = tokio::time::timeout(Duration::from_secs(3), second.recv()).await;
    assert!(
        extra.is_err(),
        "the restarted consumer read more than the 600 left"
    );

    keys.extend(rest);
    assert_each_key_once(&keys, 1_000);
    assert_eq!(committed(&broker, "services-resume", topic, 2), 1_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlx_connects_and_runs_a_migration() {
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    let postgres = Postgres::start(&engine, &config(), &Placement::default())
        .await
        .expect("postgres starts");
    let pool = sqlx::PgPool::connect(&postgres.url)
        .await
        .expect("sqlx connects");
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrations");
    let migrator = sqlx::migrate::Migrator::new(migrations)
        .await
        .expect("the migrations are read");

    migrator.run(&pool).await.expect("the migration runs");
    migrator.run(&pool).await.expect("a second run is a no-op");

    sqlx::query("INSERT INTO probe_events (event_id, value) VALUES ($1, $2)")
        .bind("e-1")
        .bind(1.5_f64)
        .execute(&pool)
        .await
        .expect("the migrated table takes a row");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("the migrations table is readable");
    assert_eq!(applied, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_reset_leaves_every_fleet_topic_empty() {
    let broker = start_broker().await;
    fleetbench::run::reset_topics(&broker.bootstrap_servers)
        .await
        .expect("the first reset creates the topics");
    let topics = fleetbench::pipeline::all_topics();
    for topic in &topics {
        produce_keyed(&broker, topic, 30).await;
    }
    fleetbench::run::reset_topics(&broker.bootstrap_servers)
        .await
        .expect("the second reset deletes and creates them again");
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap_servers)
        .create()
        .expect("a consumer is created");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("the broker answers a metadata request");
    for topic in &topics {
        let listed = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .unwrap_or_else(|| panic!("topic {topic} exists after the reset"));
        for partition in listed.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
                .expect("the broker answers the watermarks");
            assert_eq!(
                (low, high),
                (0, 0),
                "partition {} of {topic} holds messages after the reset",
                partition.id()
            );
        }
    }
}
