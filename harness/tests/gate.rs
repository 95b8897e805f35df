//! `fleetbench gate` end to end: two fleets of real images built in the
//! test, analysed by the same code the bench uses, written as reports, and
//! gated by the binary. An image made deliberately bigger must exit 1; the
//! same images again must exit 0; a broken report must exit 2 naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use fleetbench::analyze::Analyzer;
use fleetbench::bench::analyse_images;
use fleetbench::gate::Baseline;
use fleetbench::report::{BenchReport, BenchSettings, Environment, StrategyResult};
use fleetbench::strategy::{Base, Strategy};

mod support;

use support::TestImages;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the `fleetbench` binary; returns exit code, stdout and stderr.
fn fleetbench(args: &[&str]) -> (i32, String, String) {
    let config = root().join("fleetbench.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A `FROM scratch` image holding one file of `bytes` zero bytes and one
/// file every image of the test shares.
async fn build(images: &mut TestImages, name: &str, bytes: usize) -> String {
    let dockerfile = "FROM scratch\nCOPY shared /shared\nCOPY payload /payload\nUSER 65532\n";
    let payload = vec![0u8; bytes];
    images
        .build(
            name,
            dockerfile,
            &[("shared", &[7u8; 4096]), ("payload", &payload)],
        )
        .await
}

/// A sizes-only report of a two-image fleet, analysed as the bench does.
async fn report_of(tags: &[String]) -> BenchReport {
    let names = vec!["first".to_string(), "second".to_string()];
    let mut analyzer = Analyzer::new(10);
    let (images, fleet) = analyse_images(&mut analyzer, &names, tags, None)
        .await
        .expect("the test images analyse");
    let result = StrategyResult {
        strategy: Strategy::Separated,
        base: Base::Scratch,
        images,
        fleet,
        builds: Vec::new(),
        runtime: None,
    };
    let settings = BenchSettings {
        mode: "quick".into(),
        compile_mode: "prebuilt".into(),
        profile: "test".into(),
        repeat: 1,
        change_worker: "alert-manager".into(),
        strategies: vec![Strategy::Separated],
        bases: vec![Base::Scratch],
        runtime: false,
    };
    BenchReport::new(Environment::default(), settings, vec![result], Vec::new())
}

#[tokio::test]
async fn an_image_made_deliberately_bigger_fails_the_gate_and_the_same_images_pass() {
    let mut images = TestImages::new("gate").await;
    let first = build(&mut images, "first", 1_000_000).await;
    let second = build(&mut images, "second", 1_000_000).await;
    // 5% more payload: past the 1% image_bytes threshold of fleetbench.toml.
    let bigger = build(&mut images, "second-bigger", 1_050_000).await;
    let dir = &images.dir;

    let baseline_report = report_of(&[first.clone(), second.clone()]).await;
    let same_report = report_of(&[first.clone(), second]).await;
    let bigger_report = report_of(&[first, bigger]).await;
    let baseline = dir.path().join("baseline.json");
    Baseline::of(&baseline_report).save(&baseline).unwrap();
    let same = dir.path().join("same");
    let grown = dir.path().join("grown");
    same_report.write(&same).unwrap();
    bigger_report.write(&grown).unwrap();
    let baseline = baseline.to_str().unwrap();

    let (code, stdout, stderr) =
        fleetbench(&["gate", "--baseline", baseline, same.to_str().unwrap()]);
    assert_eq!(code, 0, "unchanged images must pass\n{stdout}{stderr}");
    assert!(stdout.contains(" 0 fail"), "{stdout}");

    let (code, stdout, stderr) =
        fleetbench(&["gate", "--baseline", baseline, grown.to_str().unwrap()]);
    assert_eq!(code, 1, "a bigger image must fail\n{stdout}{stderr}");
    for failing in [
        "image.separated.scratch.second.size_bytes",
        "fleet.separated.scratch.naive_bytes",
        "fleet.separated.scratch.stored_bytes",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(failing))
            .unwrap_or_else(|| panic!("{failing} not listed:\n{stdout}"));
        assert!(line.contains("REGRESSION"), "{line}");
    }
    assert!(
        !stdout.contains("image.separated.scratch.first.size_bytes"),
        "the unchanged image is not listed as failing:\n{stdout}"
    );
}

#[test]
fn a_report_that_is_not_json_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("report.json");
    std::fs::write(&broken, "{ truncated").unwrap();
    let (code, _, stderr) = fleetbench(&[
        "gate",
        "--baseline",
        broken.to_str().unwrap(),
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(broken.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("not JSON"), "{stderr}");
}

#[test]
fn a_baseline_of_another_profile_is_refused_as_not_comparable() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |profile: &str| BenchSettings {
        mode: "quick".into(),
        compile_mode: "prebuilt".into(),
        profile: profile.into(),
        repeat: 1,
        change_worker: "alert-manager".into(),
        strategies: vec![Strategy::Unified],
        bases: vec![Base::Debian],
        runtime: false,
    };
    let release = BenchReport::new(Environment::default(), settings("release"), vec![], vec![]);
    let dev = BenchReport::new(Environment::default(), settings("dev"), vec![], vec![]);
    let baseline = dir.path().join("baseline.json");
    Baseline::of(&release).save(&baseline).unwrap();
    let report = dir.path().join("dev");
    dev.write(&report).unwrap();
    let (code, _, stderr) = fleetbench(&[
        "gate",
        "--baseline",
        baseline.to_str().unwrap(),
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not comparable"), "{stderr}");
    assert!(stderr.contains("profile release"), "{stderr}");
}
