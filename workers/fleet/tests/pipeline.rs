//! End to end: the nine workers as `fleet` processes on the committed
//! fixture, against the real broker and PostgreSQL. Every result table must
//! equal the expected outputs committed in fixtures/expected/pipeline.json
//! (row count and checksum, see fleetbench::verify). The poison run mixes 1%
//! malformed events into the same fixture: each one must reach the
//! dead-letter topic with its reason and the original bytes, and the results
//! must be the same as without them.
//!
//! `FLEETBENCH_BLESS=1 cargo test -p fleet --test pipeline` rewrites the
//! expected outputs from the clean run (then review the diff).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_runtime::events::TELEMETRY_RAW;
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::pipeline::{all_topics, wait_until_finished};
use fleetbench::services::{Broker, Placement, Postgres};
use fleetbench::strategy::WORKERS;
use fleetbench::verify::{compare, Digests, ExpectedOutputs};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message};

const PARTITIONS: i32 = 3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn expected_path() -> PathBuf {
    root().join("fixtures/expected/pipeline.json")
}

/// The fleet's processes, killed when dropped so a failing test leaves none.
struct Fleet(Vec<(String, Child)>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Fleet {
    /// Starts `fleet WORKER` for each of the nine workers.
    fn start(broker: &Broker, postgres: &Postgres) -> Self {
        let children = WORKERS
            .iter()
            .map(|worker| {
                let child = Command::new(env!("CARGO_BIN_EXE_fleet"))
                    .arg(worker)
                    .env("KAFKA_BROKERS", &broker.bootstrap_servers)
                    .env("DATABASE_URL", &postgres.url)
                    .env("METRICS_ADDR", "127.0.0.1:0")
                    .env("KAFKA_PARTITIONS", PARTITIONS.to_string())
                    .env("TICK_INTERVAL_MS", "500")
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("the fleet binary starts");
                (worker.to_string(), child)
            })
            .collect();
        Self(children)
    }

    /// Sends SIGTERM to every worker and checks each exits 0 within 10 s.
    fn stop(mut self) {
        for (_, child) in &self.0 {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (worker, child) in &mut self.0 {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "{worker} exited with {status} on SIGTERM");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{worker} still runs 10 s after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Fails naming any worker that has exited.
    fn assert_running(&mut self) {
        for (worker, child) in &mut self.0 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{worker} exited during the run with {status}");
            }
        }
    }
}

/// Runs the whole fleet on `lines`; returns the digests of the result
/// tables and the broker (for reading dead letters).
async fn run_pipeline(lines: &[String], label: &str) -> (Digests, Broker, Postgres) {
    let (digests, broker, postgres) = run_pipeline_inner(lines).await;
    // Every result row in canonical form, kept in target/ for a diff between
    // two runs when a checksum differs (the databases are gone by then).
    let pool = sqlx::PgPool::connect(&postgres.url).await.unwrap();
    let mut dump = String::new();
    for (table, skip) in fleetbench::verify::RESULT_TABLES {
        let rows = fleetbench::verify::canonical_rows(&pool, table, skip)
            .await
            .unwrap_or_default();
        for row in rows {
            dump.push_str(&format!("{table}\t{row}\n"));
        }
    }
    let path = root().join(format!("target/fleetbench/pipeline-{label}.rows"));
    let _ = std::fs::create_dir_all(path.parent().unwrap());
    std::fs::write(&path, dump).unwrap();
    println!("result rows written to {}", path.display());
    (digests, broker, postgres)
}

async fn run_pipeline_inner(lines: &[String]) -> (Digests, Broker, Postgres) {
    let fleet = FleetConfig::load(&root().join("fleetbench.toml")).expect("fleetbench.toml loads");
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    let placement = Placement::default();
    let broker = Broker::start(&engine, &fleet, &placement)
        .await
        .expect("the broker starts");
    let postgres = Postgres::start(&engine, &fleet, &placement)
        .await
        .expect("postgres starts");
    let topics = all_topics();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    broker
        .create_topics(&topic_refs, PARTITIONS)
        .await
        .expect("the topics are created");
    let mut workers = Fleet::start(&broker, &postgres);
    fleetbench::feed::produce_lines(&broker.bootstrap_servers, TELEMETRY_RAW, lines)
        .await
        .expect("the fixture is produced");
    let pool = sqlx::PgPool::connect(&postgres.url).await.unwrap();
    let (digests, drained) = wait_until_finished(
        &broker.bootstrap_servers,
        &pool,
        PARTITIONS,
        "",
        Duration::from_secs(3),
        Duration::from_secs(300),
    )
    .await
    .expect("the pipeline finishes");
    println!("every input consumed after {drained:?}");
    workers.assert_running();
    workers.stop();
    (digests, broker, postgres)
}

fn fixture_lines() -> Vec<String> {
    std::fs::read_to_string(root().join("fixtures/telemetry.jsonl"))
        .expect("the fixture is readable")
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_expected(digests: &Digests) {
    let expected = ExpectedOutputs::load(&expected_path()).expect("the expected outputs load");
    let mismatches = compare(&expected.tables, digests);
    assert!(
        mismatches.is_empty(),
        "result tables differ from fixtures/expected/pipeline.json: {}",
        serde_json::to_string_pretty(&mismatches).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_pipeline_on_the_fixture_gives_the_expected_results() {
    let (digests, _broker, _postgres) = run_pipeline(&fixture_lines(), "clean").await;
    for (table, digest) in &digests {
        println!("{table}: {} rows, {}", digest.rows, digest.sha256);
    }
    if std::env::var_os("FLEETBENCH_BLESS").is_some() {
        ExpectedOutputs::save(&expected_path(), &digests).unwrap();
    }
    for table in [
        "measurements",
        "kpi_windows",
        "anomalies",
        "alerts",
        "incidents",
    ] {
        assert!(digests[table].rows > 0, "{table} is empty");
    }
    assert_expected(&digests);
}

/// Malformed events of every kind the ingestor rejects, one per 100 lines.
fn poison(count: usize) -> Vec<String> {
    let kinds = [
        |i: usize| format!("{{\"event_id\":\"poison-{i}\",\"ts_ms\":"),
        |i: usize| format!("not json at all {i}"),
        |i: usize| {
            format!(
                "{{\"event_id\":\"poison-{i}\",\"ts_ms\":1767225600000,\"entity\":\"lon-auth-1\",\
                 \"site\":\"lon\",\"service\":\"auth\",\"metric\":\"latency\",\"value\":1.0,\
                 \"unit\":\"furlongs\",\"error\":false}}"
            )
        },
        |i: usize| {
            format!(
                "{{\"event_id\":\"poison-{i}\",\"ts_ms\":1767225600000,\"entity\":\"lon-auth-1\",\
                 \"site\":\"lon\",\"service\":\"auth\",\"metric\":\"latency\",\"value\":\"fast\",\
                 \"unit\":\"ms\",\"error\":false}}"
            )
        },
        |i: usize| {
            format!(
                "{{\"event_id\":\"poison-{i}\",\"ts_ms\":1767225600000,\"entity\":\"lon-auth-1\",\
                 \"site\":\"lon\",\"service\":\"auth\",\"metric\":\"cpu\",\"value\":50000.0,\
                 \"unit\":\"percent\",\"error\":false}}"
            )
        },
        |i: usize| format!("{{\"event_id\":\"poison-{i}\",\"surprise\":true}}"),
    ];
    (0..count).map(|i| kinds[i % kinds.len()](i)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_percent_poison_is_dead_lettered_with_reasons_and_changes_no_result() {
    let clean = fixture_lines();
    let bad = poison(clean.len() / 100);
    let mut lines = Vec::with_capacity(clean.len() + bad.len());
    for (index, line) in clean.into_iter().enumerate() {
        lines.push(line);
        if index % 100 == 50 {
            if let Some(p) = bad.get(index / 100) {
                lines.push(p.clone());
            }
        }
    }
    let (digests, broker, _postgres) = run_pipeline(&lines, "poison").await;
    assert_expected(&digests);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap_servers)
        .set("group.id", "poison-test-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let dlq = fleet_runtime::dlq::topic_of(TELEMETRY_RAW);
    consumer.subscribe(&[&dlq]).unwrap();
    let mut letters: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while letters.len() < bad.len() && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            let payload =
                String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
            let reason = message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "dlq-reason"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
                .unwrap_or_default();
            letters.insert(payload, reason);
        }
    }
    assert_eq!(
        letters.len(),
        bad.len(),
        "every poison line is dead-lettered"
    );
    for line in &bad {
        let reason = letters
            .get(line)
            .unwrap_or_else(|| panic!("not dead-lettered: {line}"));
        assert!(!reason.is_empty(), "no reason given for {line}");
    }
}
