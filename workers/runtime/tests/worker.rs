//! The worker loop against a real broker and PostgreSQL: results written,
//! outputs published, offsets committed, poison dead-lettered with its
//! reason, and a clean stop on shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use fleet_runtime::dlq::REASON_HEADER;
use fleet_runtime::shutdown;
use fleet_runtime::{Outcome, Output, Processor, RuntimeConfig};
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::services::{Broker, Placement, Postgres};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use serde::Deserialize;
use sqlx::PgConnection;

/// A reading as the test sends it; `site` may be missing so that the
/// database, not the parser, rejects it.
#[derive(Debug, Deserialize)]
struct Reading {
    id: String,
    value: f64,
    site: Option<String>,
}

/// Stores readings in `measurements` and republishes them doubled.
struct Doubler;

impl Processor for Doubler {
    type Event = Reading;

    fn name(&self) -> &'static str {
        "doubler"
    }

    fn input_topics(&self) -> Vec<String> {
        vec!["rt.in".into()]
    }

    fn output_topics(&self) -> Vec<String> {
        vec!["rt.out".into()]
    }

    fn parse(&self, _topic: &str, payload: &[u8]) -> Outcome<Reading> {
        let reading: Reading =
            serde_json::from_slice(payload).map_err(|e| format!("not a reading: {e}"))?;
        if reading.value < 0.0 {
            return Err(format!("value {} is negative", reading.value));
        }
        Ok(reading)
    }

    async fn process(
        &mut self,
        events: Vec<Reading>,
        tx: &mut PgConnection,
    ) -> Result<Vec<Output>, fleet_runtime::ProcessError> {
        let mut outputs = Vec::new();
        for reading in events {
            sqlx::query(
                "INSERT INTO measurements (event_id, entity, site, service, metric, unit, value, is_error, event_time) \
                 VALUES ($1, 'e', $2, 's', 'm', 'u', $3, false, now()) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&reading.id)
            .bind(&reading.site)
            .bind(reading.value)
            .execute(&mut *tx)
            .await?;
            outputs.push(Output::json(
                "rt.out",
                reading.id.clone(),
                &(reading.value * 2.0),
            ));
        }
        Ok(outputs)
    }
}

struct Services {
    broker: Broker,
    postgres: Postgres,
}

async fn services() -> Services {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fleetbench.toml");
    let config = FleetConfig::load(&path).expect("fleetbench.toml loads");
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    let placement = Placement::default();
    let broker = Broker::start(&engine, &config, &placement)
        .await
        .expect("the broker starts");
    // The test sends before the worker has created its topics.
    broker
        .create_topics(&["rt.in"], 2)
        .await
        .expect("the input topic is created");
    Services {
        broker,
        postgres: Postgres::start(&engine, &config, &placement)
            .await
            .expect("postgres starts"),
    }
}

fn runtime_config(services: &Services, group: &str) -> RuntimeConfig {
    let env = HashMap::from([
        ("KAFKA_GROUP_ID", group.to_string()),
        ("KAFKA_BROKERS", services.broker.bootstrap_servers.clone()),
        ("DATABASE_URL", services.postgres.url.clone()),
        ("METRICS_ADDR", "127.0.0.1:0".to_string()),
        ("KAFKA_PARTITIONS", "2".to_string()),
        ("BATCH_MAX_EVENTS", "50".to_string()),
    ]);
    RuntimeConfig::from_lookup("doubler", |key| env.get(key).cloned())
        .expect("the test config is valid")
}

async fn send(broker: &Broker, payloads: &[String]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap_servers)
        .create()
        .expect("a producer is created");
    for (i, payload) in payloads.iter().enumerate() {
        producer
            .send(
                FutureRecord::to("rt.in")
                    .key(&format!("k{i}"))
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("the message is acknowledged");
    }
}

/// Reads `count` messages of `topic` from the start, as (key, payload, reason header).
async fn read_all(
    broker: &Broker,
    topic: &str,
    count: usize,
) -> Vec<(String, Vec<u8>, Option<String>)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap_servers)
        .set("group.id", format!("reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a reader is created");
    consumer.subscribe(&[topic]).expect("the reader subscribes");
    let mut read = Vec::new();
    while read.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{topic}: only {} of {count} messages within 60 s",
                    read.len()
                )
            })
            .expect("the reader receives");
        let reason = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == REASON_HEADER)
                .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
        });
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        read.push((key, message.payload().unwrap_or_default().to_vec(), reason));
    }
    read
}

async fn wait_for_rows(url: &str, expected: i64) {
    let pool = sqlx::PgPool::connect(url).await.expect("sqlx connects");
    for _ in 0..600 {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM measurements")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        if rows == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("measurements never reached {expected} rows");
}

#[tokio::test(flavor = "multi_thread")]
async fn good_events_are_stored_and_published_and_poison_goes_to_the_dlq_with_its_reason() {
    let services = services().await;
    let mut payloads: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"id":"r{i}","value":{i}.5,"site":"lon"}}"#))
        .collect();
    payloads.insert(10, "{not json".into());
    payloads.insert(50, r#"{"id":"neg","value":-1,"site":"lon"}"#.into());
    payloads.insert(90, r#"{"id":"nosite","value":1}"#.into());

    let (trigger, listener) = shutdown::channel();
    let worker = tokio::spawn(fleet_runtime::run(
        Doubler,
        runtime_config(&services, "doubler"),
        listener,
    ));
    send(&services.broker, &payloads).await;

    wait_for_rows(&services.postgres.url, 200).await;
    let outputs = read_all(&services.broker, "rt.out", 200).await;
    assert_eq!(outputs.len(), 200);
    let mut letters = read_all(&services.broker, "rt.in.dlq", 3).await;
    letters.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(letters[0].1, br#"{"id":"neg","value":-1,"site":"lon"}"#);
    assert_eq!(letters[0].2.as_deref(), Some("value -1 is negative"));
    assert_eq!(letters[1].1, br#"{"id":"nosite","value":1}"#);
    assert!(
        letters[1]
            .2
            .as_deref()
            .unwrap()
            .contains("rejected by the database"),
        "{letters:?}"
    );
    assert_eq!(letters[2].1, b"{not json");
    assert!(
        letters[2]
            .2
            .as_deref()
            .unwrap()
            .starts_with("not a reading"),
        "{letters:?}"
    );

    trigger.trip();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker stops within 10 s")
        .expect("the worker task did not panic")
        .expect("the worker stops without error");
    assert_eq!(committed(&services.broker, "doubler"), 203);
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_the_whole_input_writes_no_row_twice() {
    let services = services().await;
    let payloads: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"id":"r{i}","value":{i},"site":"ams"}}"#))
        .collect();
    send(&services.broker, &payloads).await;

    // A second group reads everything again, as a worker that crashed
    // before committing would after its restart.
    for group in ["doubler", "doubler-replay"] {
        let (trigger, listener) = shutdown::channel();
        let config = runtime_config(&services, group);
        let worker = tokio::spawn(fleet_runtime::run(Doubler, config, listener));
        for _ in 0..600 {
            if committed(&services.broker, group) == 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        trigger.trip();
        worker.await.unwrap().unwrap();
        assert_eq!(committed(&services.broker, group), 100, "group {group}");
        wait_for_rows(&services.postgres.url, 100).await;
    }
    let outputs = read_all(&services.broker, "rt.out", 200).await;
    assert_eq!(
        outputs.len(),
        200,
        "at-least-once: the replay publishes again"
    );
}

fn committed(broker: &Broker, group: &str) -> i64 {
    fleet_runtime::kafka::committed_total(&broker.bootstrap_servers, group, "rt.in", 2)
        .expect("committed offsets are read")
}
