//! The bootstrap against the real engine: a rerun builds nothing, and the
//! binary turns bad input into exit code 2 with the cause named.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fleetbench::bootstrap::{Action, Bootstrap};
use fleetbench::config::FleetConfig;
use fleetbench::docker::Engine;

fn config_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fleetbench.toml")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_bootstrap_builds_nothing_and_takes_under_ten_seconds() {
    let config = FleetConfig::load(&config_path()).unwrap();
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    let logs = tempfile::tempdir().unwrap();

    Bootstrap::new(&engine, &config, logs.path().to_path_buf(), false)
        .run()
        .await
        .expect("the first bootstrap succeeds");
    let started = Instant::now();
    let outcomes = Bootstrap::new(&engine, &config, logs.path().to_path_buf(), false)
        .run()
        .await
        .expect("the second bootstrap succeeds");
    let elapsed = started.elapsed();

    for outcome in &outcomes {
        assert_eq!(outcome.action, Action::Skipped, "{outcome:?}");
        assert!(outcome.size_bytes.unwrap_or(0) > 0, "{outcome:?}");
    }
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_base_image_is_at_most_ninety_megabytes() {
    let config = FleetConfig::load(&config_path()).unwrap();
    let engine = Engine::connect().await.expect("a Docker Engine answers");
    let facts = engine
        .image_facts(config.images.base.reference())
        .await
        .unwrap()
        .expect("the base image was bootstrapped");
    assert!(
        facts.size_bytes <= 90_000_000,
        "base is {} bytes",
        facts.size_bytes
    );
}

fn fleetbench(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_docker_engine_exits_2_and_says_what_to_start() {
    let config = config_path().display().to_string();
    let (code, stderr) = fleetbench(
        &["--config", &config, "bootstrap"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unix:///nonexistent/docker.sock"),
        "{stderr}"
    );
    assert!(stderr.contains("start one"), "{stderr}");
}

#[test]
fn a_broken_config_exits_2_and_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    let text = std::fs::read_to_string(config_path()).unwrap();
    std::fs::write(&path, text.replace("suite = \"bookworm\"", "suite = 12")).unwrap();
    let (code, stderr) = fleetbench(&["--config", path.to_str().unwrap(), "bootstrap"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.toml"), "{stderr}");
    assert!(stderr.contains("suite"), "{stderr}");
}
