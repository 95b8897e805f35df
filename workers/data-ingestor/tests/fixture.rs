//! The ingestor on the committed fixture, against the real broker and
//! PostgreSQL: every distinct event stored once in canonical units and
//! published once; poison dead-lettered; a second pass over the same input
//! publishes nothing.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use data_ingestor::Ingestor;
use fleet_runtime::events::{Measurement, RawTelemetry, TELEMETRY_NORMALIZED, TELEMETRY_RAW};
use fleet_runtime::{run_until_committed, RuntimeConfig};
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::services::{Broker, Placement, Postgres};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture_lines() -> Vec<String> {
    std::fs::read_to_string(root().join("fixtures/telemetry.jsonl"))
        .expect("the fixture is committed")
        .lines()
        .map(str::to_string)
        .collect()
}

async fn read(broker: &Broker, topic: &str, group: &str, idle: Duration) -> Vec<Vec<u8>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap_servers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a reader is created");
    consumer.subscribe(&[topic]).expect("the reader subscribes");
    let mut payloads = Vec::new();
    while let Ok(message) = tokio::time::timeout(idle, consumer.recv()).await {
        payloads.push(
            message
                .expect("the reader receives")
                .payload()
                .unwrap_or_default()
                .to_vec(),
        );
    }
    payloads
}

/// Runs the ingestor in group `group` until it has committed `messages`
/// offsets on `telemetry.raw`, then stops it as SIGTERM would.
async fn ingest(broker: &Broker, postgres: &Postgres, group: &str, messages: i64) {
    let env = HashMap::from([
        ("KAFKA_BROKERS", broker.bootstrap_servers.clone()),
        ("DATABASE_URL", postgres.url.clone()),
        ("METRICS_ADDR", "127.0.0.1:0".to_string()),
        ("KAFKA_GROUP_ID", group.to_string()),
    ]);
    let config = RuntimeConfig::from_lookup("data-ingestor", |k| env.get(k).cloned()).unwrap();
    let timeout = Duration::from_secs(120);
    let committed = run_until_committed(
        Ingestor::default(),
        config,
        TELEMETRY_RAW,
        3,
        messages,
        timeout,
    )
    .await
    .expect("the ingestor stops cleanly");
    assert_eq!(committed, messages, "offsets committed by {group}");
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("the count query runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fixture_is_stored_and_published_once_in_canonical_units() {
    let config = FleetConfig::load(&root().join("fleetbench.toml")).unwrap();
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    let placement = Placement::default();
    let broker = Broker::start(&engine, &config, &placement).await.unwrap();
    let postgres = Postgres::start(&engine, &config, &placement).await.unwrap();
    broker.create_topics(&[TELEMETRY_RAW], 3).await.unwrap();

    let mut lines = fixture_lines();
    let distinct: BTreeSet<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<RawTelemetry>(l).unwrap().event_id)
        .collect();
    let poison = ["{\"event_id\":", "[]", "{\"event_id\":\"x\",\"ts_ms\":1,\"entity\":\"e\",\"site\":\"s\",\"service\":\"v\",\"metric\":\"cpu\",\"value\":1,\"unit\":\"percent\"}"];
    lines.extend(poison.iter().map(|p| p.to_string()));
    fleetbench::feed::produce_lines(&broker.bootstrap_servers, TELEMETRY_RAW, &lines)
        .await
        .expect("the fixture is produced");
    let pool = sqlx::PgPool::connect(&postgres.url).await.unwrap();

    ingest(&broker, &postgres, "data-ingestor", lines.len() as i64).await;
    let distinct_rows = distinct.len() as i64;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM measurements").await,
        distinct_rows
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM measurements WHERE published").await,
        distinct_rows
    );

    // A second pass over the whole input (another group, as after a crash
    // before any commit) stores nothing again and publishes nothing again.
    ingest(
        &broker,
        &postgres,
        "data-ingestor-replay",
        lines.len() as i64,
    )
    .await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM measurements").await,
        distinct_rows
    );

    let normalized = read(
        &broker,
        TELEMETRY_NORMALIZED,
        "check-1",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        normalized.len(),
        distinct.len(),
        "each distinct event published once"
    );
    let units: BTreeSet<String> = normalized
        .iter()
        .map(|p| serde_json::from_slice::<Measurement>(p).unwrap().unit)
        .collect();
    assert_eq!(
        units,
        BTreeSet::from(["ms".to_string(), "percent".to_string()])
    );
    let letters = read(
        &broker,
        "telemetry.raw.dlq",
        "check-dlq",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        letters.len(),
        2 * poison.len(),
        "each pass dead-letters the poison"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM measurements WHERE unit NOT IN ('ms', 'percent')"
        )
        .await,
        0
    );
}
