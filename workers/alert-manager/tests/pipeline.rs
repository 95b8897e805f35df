//! The alert manager and the incident correlator on the real broker and
//! PostgreSQL, fed a hand-made sequence of anomalies and capacity forecasts
//! (a duplicate, suppressed repeats, a flapping series, two sites, a
//! forecast that does not breach, a message that is not JSON): every
//! alert, notification, incident and incident link is checked exactly.

use std::collections::HashMap;
use std::time::Duration;

use alert_manager::rules::Rules;
use alert_manager::{AlertManager, Notification};
use fleet_runtime::events::{Anomaly, Forecast, ALERTS, ALERT_NOTIFICATIONS, ANOMALIES, FORECASTS};
use fleet_runtime::{run_until_committed, RuntimeConfig};
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::services::{Broker, Placement, Postgres};
use incident_correlator::Correlator;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};

/// 2026-01-01T00:00Z, ms.
const T0: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;

fn at(minute: i64) -> i64 {
    T0 + minute * MIN
}

fn anomaly(entity: &str, minute: i64, score: f64) -> String {
    let window_id = format!("{entity}|latency|{}", at(minute));
    serde_json::to_string(&Anomaly {
        window_id,
        series_key: format!("{entity}|latency"),
        entity: entity.into(),
        site: "lon".into(),
        service: "web".into(),
        metric: "latency".into(),
        window_start_ms: at(minute),
        value: 400.0,
        expected: 100.0,
        score,
        method: "model".into(),
        model_version: Some(1),
    })
    .unwrap()
}

fn forecast(made_from: i64, target: i64, predicted: f64) -> String {
    let made_from = format!("db-1|cpu|{}", at(made_from));
    serde_json::to_string(&Forecast {
        forecast_id: format!("{made_from}|{}", at(target)),
        series_key: "db-1|cpu".into(),
        entity: "db-1".into(),
        site: "fra".into(),
        service: "db".into(),
        metric: "cpu".into(),
        made_from,
        target_start_ms: at(target),
        predicted,
        capacity: Some(90.0),
        breach: predicted > 90.0,
    })
    .unwrap()
}

fn web1(minute: i64) -> String {
    format!("anomaly|web-1|latency|{}", at(minute))
}

fn db1(made_from: i64, target: i64) -> String {
    format!("capacity|db-1|cpu|{}|{}", at(made_from), at(target))
}

fn config(broker: &Broker, postgres: &Postgres, name: &str) -> RuntimeConfig {
    let env = HashMap::from([
        ("KAFKA_BROKERS", broker.bootstrap_servers.clone()),
        ("DATABASE_URL", postgres.url.clone()),
        ("METRICS_ADDR", "127.0.0.1:0".to_string()),
    ]);
    RuntimeConfig::from_lookup(name, |k| env.get(k).cloned()).unwrap()
}

async fn services() -> (Broker, Postgres) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fleet = FleetConfig::load(&root.join("fleetbench.toml")).expect("fleetbench.toml loads");
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    let placement = Placement::default();
    let broker = Broker::start(&engine, &fleet, &placement)
        .await
        .expect("the broker starts");
    let postgres = Postgres::start(&engine, &fleet, &placement)
        .await
        .expect("postgres starts");
    broker
        .create_topics(&[ANOMALIES, FORECASTS, ALERTS, ALERT_NOTIFICATIONS], 3)
        .await
        .expect("the topics are created");
    (broker, postgres)
}

/// Every notification on the topic, read until `expected` arrived and then
/// three quiet seconds more, so that an extra one would be seen.
async fn notifications(brokers: &str, expected: usize) -> Vec<Notification> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "pipeline-test-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[ALERT_NOTIFICATIONS]).unwrap();
    let mut read = Vec::new();
    loop {
        let wait = if read.len() < expected { 60 } else { 3 };
        match tokio::time::timeout(Duration::from_secs(wait), consumer.recv()).await {
            Ok(message) => {
                let message = message.unwrap();
                read.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
            }
            Err(_) => return read,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_notifications_and_incidents_follow_the_rules_exactly() {
    let (broker, postgres) = services().await;
    let anomalies = vec![
        anomaly("web-1", 20, 5.0),
        anomaly("web-1", 20, 5.0),  // duplicate: nothing new
        anomaly("web-1", 22, 9.5),  // suppressed, critical
        anomaly("web-1", 40, 5.0),  // second opening within the hour
        anomaly("web-1", 60, 6.0),  // third opening within the hour: flapping
        anomaly("web-1", 65, 5.0),  // repeat of the held episode
        anomaly("web-1", 130, 5.0), // quiet again: notified, one held
        anomaly("web-2", 25, 4.5),  // another key of the same service
        "not json".to_string(),     // dead-lettered
    ];
    let forecasts = vec![
        forecast(10, 12, 95.0),
        forecast(10, 13, 110.0), // critical, suppressed
        forecast(11, 12, 96.0),  // same target from the next window
        forecast(11, 14, 97.0),
        forecast(11, 15, 80.0), // no breach: dead-lettered
        forecast(30, 31, 95.0),
    ];
    let brokers = &broker.bootstrap_servers;
    fleetbench::feed::produce_lines(brokers, ANOMALIES, &anomalies)
        .await
        .unwrap();
    fleetbench::feed::produce_lines(brokers, FORECASTS, &forecasts)
        .await
        .unwrap();

    let timeout = Duration::from_secs(120);
    for (topic, count) in [(ANOMALIES, anomalies.len()), (FORECASTS, forecasts.len())] {
        let manager = AlertManager::new(Rules::default());
        let settings = config(&broker, &postgres, alert_manager::NAME);
        let committed = run_until_committed(manager, settings, topic, 3, count as i64, timeout)
            .await
            .unwrap();
        assert_eq!(committed, count as i64, "{topic} consumed");
    }
    let settings = config(&broker, &postgres, incident_correlator::NAME);
    run_until_committed(Correlator::new(600), settings, ALERTS, 3, 12, timeout)
        .await
        .unwrap();

    let pool = sqlx::PgPool::connect(&postgres.url).await.unwrap();
    assert_alerts(&pool).await;
    assert_notifications(brokers).await;
    assert_incidents(&pool).await;
}

async fn assert_alerts(pool: &sqlx::PgPool) {
    let mut rows: Vec<(String, String, String, i64, bool)> =
        sqlx::query_as("SELECT alert_id, state, severity, held, published FROM alerts")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.sort();
    let mut want = vec![
        (web1(20), "notified", "warning", 0),
        (web1(22), "suppressed", "critical", 0),
        (web1(40), "notified", "warning", 0),
        (web1(60), "flapping", "warning", 0),
        (web1(65), "suppressed", "warning", 0),
        (web1(130), "notified", "warning", 1),
        (
            format!("anomaly|web-2|latency|{}", at(25)),
            "notified",
            "warning",
            0,
        ),
        (db1(10, 12), "notified", "warning", 0),
        (db1(10, 13), "suppressed", "critical", 0),
        (db1(11, 12), "suppressed", "warning", 0),
        (db1(11, 14), "suppressed", "warning", 0),
        (db1(30, 31), "notified", "warning", 0),
    ];
    want.sort();
    let got: Vec<(String, &str, &str, i64)> = rows
        .iter()
        .map(|(id, state, severity, held, published)| {
            assert!(published, "{id} was not published");
            (id.clone(), state.as_str(), severity.as_str(), *held)
        })
        .collect();
    assert_eq!(got, want);
}

async fn assert_notifications(brokers: &str) {
    let mut got: Vec<(String, String, i64)> = notifications(brokers, 6)
        .await
        .into_iter()
        .map(|n| (n.notification_id, n.severity, n.held_while_flapping))
        .collect();
    got.sort();
    let mut want = vec![
        (web1(20), "warning".to_string(), 0),
        (web1(40), "warning".to_string(), 0),
        (web1(130), "warning".to_string(), 1),
        (
            format!("anomaly|web-2|latency|{}", at(25)),
            "warning".to_string(),
            0,
        ),
        (db1(10, 12), "warning".to_string(), 0),
        (db1(30, 31), "warning".to_string(), 0),
    ];
    want.sort();
    assert_eq!(got, want);
}

async fn assert_incidents(pool: &sqlx::PgPool) {
    let mut incidents: Vec<(String, i64, i64, String)> = sqlx::query_as(
        "SELECT incident_id, round(extract(epoch FROM opened_at) * 1000)::bigint, \
             round(extract(epoch FROM last_at) * 1000)::bigint, severity \
         FROM incidents",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    incidents.sort();
    let lon = |m: i64| format!("lon|web|{}", at(m));
    let fra = |m: i64| format!("fra|db|{}", at(m));
    let mut want = vec![
        (lon(20), at(20), at(25), "critical".to_string()),
        (lon(40), at(40), at(40), "warning".to_string()),
        (lon(60), at(60), at(65), "warning".to_string()),
        (lon(130), at(130), at(130), "warning".to_string()),
        (fra(12), at(12), at(14), "critical".to_string()),
        (fra(31), at(31), at(31), "warning".to_string()),
    ];
    want.sort();
    assert_eq!(incidents, want);

    let mut links: Vec<(String, String)> =
        sqlx::query_as("SELECT incident_id, alert_id FROM incident_alerts")
            .fetch_all(pool)
            .await
            .unwrap();
    links.sort();
    let mut want = vec![
        (lon(20), web1(20)),
        (lon(20), web1(22)),
        (lon(20), format!("anomaly|web-2|latency|{}", at(25))),
        (lon(40), web1(40)),
        (lon(60), web1(60)),
        (lon(60), web1(65)),
        (lon(130), web1(130)),
        (fra(12), db1(10, 12)),
        (fra(12), db1(11, 12)),
        (fra(12), db1(10, 13)),
        (fra(12), db1(11, 14)),
        (fra(31), db1(30, 31)),
    ];
    want.sort();
    assert_eq!(links, want);
}
