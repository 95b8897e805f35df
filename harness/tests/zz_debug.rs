use std::path::PathBuf;
use std::time::Duration;
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;
use fleetbench::services::{Broker, Placement};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

#[tokio::test(flavor = "multi_thread")]
async fn debug_resume() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fleetbench.toml");
    let config = FleetConfig::load(&path).unwrap();
    let engine = Engine::connect().await.unwrap();
    let broker = Broker::start(&engine, &config, &Placement::default()).await.unwrap();
    broker.create_topics(&["t"], 2).await.unwrap();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &broker.bootstrap_servers).set("enable.idempotence","true").set("acks","all").set("linger.ms","5").create().unwrap();
    let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
    let futs: Vec<_> = keys.iter().map(|k| producer.send(FutureRecord::to("t").key(k).payload("x"), Duration::from_secs(5))).collect();
    for f in futs { f.await.unwrap(); }
    let mk = || { let c: StreamConsumer = ClientConfig::new().set("bootstrap.servers", &broker.bootstrap_servers).set("group.id","g").set("enable.auto.commit","false").set("auto.offset.reset","earliest").set("session.timeout.ms","10000").create().unwrap(); c.subscribe(&["t"]).unwrap(); c };
    let c1 = mk();
    let mut n = 0;
    while n < 400 { let m = c1.recv().await.unwrap(); n += 1; if n % 100 == 0 { println!("c1 p{} o{}", m.partition(), m.offset()); c1.commit_consumer_state(CommitMode::Sync).unwrap(); } }
    println!("c1 position {:?}", c1.position().unwrap());
    drop(c1);
    let c2 = mk();
    let mut counts = [0; 2];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), c2.recv()).await {
            Ok(Ok(m)) => { if counts[m.partition() as usize] == 0 { println!("c2 first p{} o{}", m.partition(), m.offset()); } counts[m.partition() as usize] += 1; }
            _ => break,
        }
    }
    println!("c2 counts {counts:?} assignment {:?}", c2.assignment().unwrap());
}
