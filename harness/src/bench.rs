//! `fleetbench bench`: the whole measurement in one command. Bootstraps the
//! support images if needed, builds every strategy of `fleetbench.toml` in
//! the cold, warm and one-worker-change scenarios, analyses the images,
//! runs the fleet of every strategy on the fixture, and writes the report
//! into `reports/<timestamp>/` and `reports/latest/`.
//!
//! `--quick` (the default) packages binaries compiled once on the host and
//! measures once; `--full` compiles inside Docker, as each Dockerfile is
//! written, and repeats every build and run three times. A step that fails
//! for one strategy does not end the bench: the report states it under
//! "what did not work", and the command exits 2.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::analyze::fleet::{pull_after_change, FleetAnalysis};
use crate::analyze::image::ImageAnalysis;
use crate::analyze::Analyzer;
use crate::bootstrap::Bootstrap;
use crate::build::{self, BuildOptions, BuildReport, CompileMode, Scenario};
use crate::config::FleetConfig;
use crate::docker::Engine;
use crate::report::{
    BenchReport, BenchSettings, Environment, FleetSizes, ImageResult, ScenarioBuild,
    StrategyResult, SupportImage,
};
use crate::run::{self, RunOptions, RunReport, Spread};
use crate::strategy::{self, Base, Strategy};
use crate::verify::ExpectedOutputs;

/// Repeats of `--full`.
pub const FULL_REPEATS: usize = 3;

/// Errors that stop a bench before it can write a report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The support images could not be made.
    #[error("bench: bootstrapping the support images: {0}")]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    /// An engine call failed.
    #[error("bench: {0}")]
    Docker(#[from] crate::docker::DockerError),
    /// The fixture or its expected outputs could not be read.
    #[error("bench: {0}")]
    Fixture(String),
    /// The report could not be written.
    #[error("bench: {0}")]
    Report(#[from] crate::report::ReportError),
}

/// How to bench.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `--full` instead of `--quick`.
    pub full: bool,
    /// Strategies (from `fleetbench.toml` unless given).
    pub strategies: Vec<Strategy>,
    /// Bases (from `fleetbench.toml` unless given).
    pub bases: Vec<Base>,
    /// Cargo profile of the prebuilt mode's host compile.
    pub profile: String,
    /// Whether to run the fleet (the runtime benchmark).
    pub runtime: bool,
    /// Where reports go (`reports/`).
    pub reports: PathBuf,
}

impl BenchOptions {
    fn repeat(&self) -> usize {
        if self.full {
            FULL_REPEATS
        } else {
            1
        }
    }

    fn compile_mode(&self) -> CompileMode {
        if self.full {
            CompileMode::InDocker
        } else {
            CompileMode::Prebuilt
        }
    }
}

/// The outcome: the report and where it was written.
#[derive(Debug)]
pub struct BenchOutcome {
    /// What was measured.
    pub report: BenchReport,
    /// The report's own directory (`reports/<timestamp>`).
    pub dir: PathBuf,
    /// The copy at `reports/latest`.
    pub latest: PathBuf,
}

/// Runs the bench of `options`, reporting each step to `progress`.
pub async fn bench(
    engine: &Engine,
    config: &FleetConfig,
    options: &BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<BenchOutcome, BenchError> {
    let root = config.root();
    let mut not_working = Vec::new();

    progress("bootstrapping the support images (cached ones are skipped)");
    let logs = root.join("target/fleetbench/logs");
    Bootstrap::new(engine, config, logs.join("bootstrap"), false)
        .run()
        .await?;
    let environment = environment(engine, config).await?;

    let build_options = BuildOptions {
        strategies: options.strategies.clone(),
        bases: options.bases.clone(),
        modes: vec![options.compile_mode()],
        scenarios: vec![Scenario::Cold, Scenario::Warm, Scenario::Change],
        change_worker: config.bench.change_worker.clone(),
        only_images: Vec::new(),
        profile: options.profile.clone(),
        logs: logs.join("build"),
        work: root.join("target/fleetbench/build"),
    };
    let mut builds = Vec::new();
    for repeat in 0..options.repeat() {
        progress(&format!(
            "building, repeat {} of {}",
            repeat + 1,
            options.repeat()
        ));
        let builder = build::Builder::new(engine, config, build_options.clone());
        match builder.run(|line| progress(line)).await {
            Ok(report) => builds.push(report),
            Err(error) => {
                warn!(%error, "build failed");
                not_working.push(format!("Building the images failed: {error}."));
                break;
            }
        }
    }

    let mut results = Vec::new();
    let mut analyzer = Analyzer::with_engine(engine.clone(), 10);
    for &strategy in &options.strategies {
        for &base in &options.bases {
            progress(&format!("analysing {} on {}", strategy.name(), base.name()));
            match analyse(&mut analyzer, strategy, base, &builds).await {
                Ok(result) => results.push(result),
                Err(problem) => not_working.push(format!(
                    "Analysing {} on {}: {problem}.",
                    strategy.name(),
                    base.name()
                )),
            }
        }
    }

    let mut ceiling = None;
    let mut identical = None;
    if options.runtime && !results.is_empty() {
        let measured: Vec<(Strategy, Base)> =
            results.iter().map(|r| (r.strategy, r.base)).collect();
        match runtime(engine, config, options, &measured, &mut progress).await {
            Ok(report) => {
                ceiling = Some(report.ceiling.clone());
                identical = Some(report.identical_across_strategies);
                attach_runtime(&mut results, &report, &mut not_working);
            }
            Err(error) => {
                warn!(%error, "runtime benchmark failed");
                let _ = run::remove_leftovers(engine).await;
                not_working.push(format!("The runtime benchmark failed: {error}."));
            }
        }
    }

    let settings = BenchSettings {
        mode: if options.full { "full" } else { "quick" }.into(),
        compile_mode: options.compile_mode().name().into(),
        profile: options.profile.clone(),
        repeat: options.repeat(),
        change_worker: config.bench.change_worker.clone(),
        strategies: options.strategies.clone(),
        bases: options.bases.clone(),
        runtime: options.runtime,
    };
    let mut report = BenchReport::new(environment, settings, results, not_working);
    report.ceiling = ceiling;
    report.identical_across_strategies = identical;
    progress("writing the report");
    let reports = if options.reports.is_absolute() {
        options.reports.clone()
    } else {
        root.join(&options.reports)
    };
    let dir = reports.join(report.created.replace(':', "-"));
    report.write(&dir)?;
    let latest = reports.join("latest");
    if latest.exists() {
        std::fs::remove_dir_all(&latest).map_err(|source| crate::report::ReportError::Io {
            operation: "replacing",
            path: latest.clone(),
            source,
        })?;
    }
    report.write(&latest)?;
    info!(dir = %dir.display(), "report written");
    Ok(BenchOutcome {
        report,
        dir,
        latest,
    })
}

/// The engine, machine, source and support images of this run.
async fn environment(engine: &Engine, config: &FleetConfig) -> Result<Environment, BenchError> {
    let root = config.root();
    let identity = build::source_identity(&root);
    let version = engine.client.version().await.ok();
    let info = engine.client.info().await.ok();
    let mut images = Vec::new();
    for (role, choice) in config.images.by_role() {
        let reference = choice.reference().to_string();
        let id = engine
            .image_facts(&reference)
            .await?
            .map_or("absent".into(), |facts| facts.id);
        images.push(SupportImage {
            role: role.into(),
            reference,
            source: if choice.is_local() {
                "local"
            } else {
                "registry"
            }
            .into(),
            id,
        });
    }
    let command_line = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let dirty = command_line("git", &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    let info_text = |f: fn(&bollard::models::SystemInfo) -> Option<String>| {
        info.as_ref()
            .and_then(f)
            .unwrap_or_else(|| "unknown".into())
    };
    Ok(Environment {
        revision: identity.revision,
        dirty,
        docker_version: engine.server_version().await?,
        docker_api_version: version
            .and_then(|v| v.api_version)
            .unwrap_or_else(|| "unknown".into()),
        docker_endpoint: engine.endpoint.clone(),
        os: format!(
            "{}, kernel {}",
            info_text(|i| i.operating_system.clone()),
            info_text(|i| i.kernel_version.clone())
        ),
        arch: info_text(|i| i.architecture.clone()),
        cpus: info.as_ref().and_then(|i| i.ncpu).unwrap_or(0).max(0) as u64,
        memory_bytes: info.as_ref().and_then(|i| i.mem_total).unwrap_or(0).max(0) as u64,
        rustc: command_line("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        images,
    })
}

/// Sizes and build times of one strategy on one base.
async fn analyse(
    analyzer: &mut Analyzer,
    strategy: Strategy,
    base: Base,
    builds: &[BuildReport],
) -> Result<StrategyResult, String> {
    let plans = strategy::images(strategy);
    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    let tags: Vec<String> = plans.iter().map(|p| p.tag(strategy, base)).collect();
    let changed_built = builds.last().is_some_and(|b| {
        b.builds
            .iter()
            .any(|i| i.strategy == strategy && i.base == base && i.scenario == Scenario::Change)
    });
    let changed_tags: Vec<String> = tags.iter().map(|t| format!("{t}-change")).collect();
    let changed = changed_built.then_some(changed_tags.as_slice());
    let (images, fleet) = analyse_images(analyzer, &names, &tags, changed).await?;
    Ok(StrategyResult {
        strategy,
        base,
        images,
        fleet,
        builds: scenario_builds(builds, strategy, base),
        runtime: None,
    })
}

/// Sizes of a fleet of engine images: each image (`names[i]` is the name
/// of `tags[i]` within the fleet) and the fleet as a whole; with
/// `changed_tags`, the gzip bytes a node holding `tags` pulls to run those.
pub async fn analyse_images(
    analyzer: &mut Analyzer,
    names: &[String],
    tags: &[String],
    changed_tags: Option<&[String]>,
) -> Result<(Vec<ImageResult>, FleetSizes), String> {
    let warm = analyzer
        .analyze_engine_images(tags)
        .await
        .map_err(|e| e.to_string())?;
    let warm = in_order(warm, tags)?;
    let pull = match changed_tags {
        Some(changed_tags) => {
            let changed = analyzer
                .analyze_engine_images(changed_tags)
                .await
                .map_err(|e| e.to_string())?;
            Some(pull_after_change(&warm, &changed).gzip_bytes)
        }
        None => None,
    };
    let fleet = FleetAnalysis::new(&warm, 10);
    let (shared_bytes, unique_bytes) = stored_split(&warm);
    let images = warm
        .iter()
        .zip(names)
        .map(|(image, name)| {
            let sharing = fleet.sharing.iter().find(|s| s.image == image.name);
            ImageResult {
                name: name.clone(),
                tag: image.name.clone(),
                id: image.id.clone(),
                size_bytes: image.size_bytes,
                gzip_bytes: image.gzip_bytes,
                zstd_bytes: image.zstd_bytes,
                layer_count: image.layers.len(),
                wasted_bytes: image.wasted_bytes,
                shared_bytes: sharing.map_or(0, |s| s.shared_bytes),
                unique_bytes: sharing.map_or(0, |s| s.unique_bytes),
                runs_as_root: image.runs_as_root,
            }
        })
        .collect();
    let sizes = FleetSizes {
        image_count: warm.len(),
        naive_bytes: fleet.naive_bytes,
        stored_bytes: fleet.stored_bytes,
        transfer_gzip_bytes: fleet.transfer_gzip_bytes,
        transfer_zstd_bytes: fleet.transfer_zstd_bytes,
        distinct_layers: fleet.distinct_layers,
        duplicate_bytes: fleet.duplicate_bytes,
        shared_bytes,
        unique_bytes,
        pull_after_change_gzip_bytes: pull,
    };
    Ok((images, sizes))
}

/// The analysed images in the order of `tags`, naming a tag the export lacks.
fn in_order(images: Vec<ImageAnalysis>, tags: &[String]) -> Result<Vec<ImageAnalysis>, String> {
    let mut by_name: HashMap<String, ImageAnalysis> =
        images.into_iter().map(|i| (i.name.clone(), i)).collect();
    tags.iter()
        .map(|tag| {
            by_name
                .remove(tag)
                .ok_or_else(|| format!("the engine's export holds no image tagged {tag}"))
        })
        .collect()
}

/// The distinct layers' bytes split into those more than one image uses
/// and those only one uses.
fn stored_split(images: &[ImageAnalysis]) -> (u64, u64) {
    let mut users: HashMap<&str, (u64, HashSet<usize>)> = HashMap::new();
    for (index, image) in images.iter().enumerate() {
        for scan in &image.scans {
            users
                .entry(scan.diff_id.as_str())
                .or_insert_with(|| (scan.size_bytes, HashSet::new()))
                .1
                .insert(index);
        }
    }
    users
        .values()
        .fold((0, 0), |(shared, unique), (bytes, who)| {
            if who.len() > 1 {
                (shared + bytes, unique)
            } else {
                (shared, unique + bytes)
            }
        })
}

/// Per scenario, the strategy's image build times over the repeats and the
/// host compile they were packaged from.
fn scenario_builds(builds: &[BuildReport], strategy: Strategy, base: Base) -> Vec<ScenarioBuild> {
    let mut out = Vec::new();
    for scenario in [Scenario::Cold, Scenario::Warm, Scenario::Change] {
        let mut images_ms = Vec::new();
        let mut host_ms = Vec::new();
        let mut last = None;
        for report in builds {
            let rows: Vec<_> = report
                .builds
                .iter()
                .filter(|b| b.strategy == strategy && b.base == base && b.scenario == scenario)
                .collect();
            if rows.is_empty() {
                continue;
            }
            images_ms.push(rows.iter().map(|b| b.elapsed_ms as f64).sum());
            host_ms.push(host_compile_ms(report, base, scenario));
            last = Some(rows);
        }
        let Some(rows) = last else { continue };
        out.push(ScenarioBuild {
            scenario,
            images_ms: Spread::of(&images_ms),
            host_compile_ms: Spread::of(&host_ms),
            cached_steps: rows.iter().map(|b| b.cached_steps).sum(),
            total_steps: rows.iter().map(|b| b.total_steps).sum(),
            redeployed: match scenario {
                Scenario::Change => rows
                    .iter()
                    .filter(|b| b.changed == Some(true))
                    .map(|b| b.image.clone())
                    .collect(),
                _ => Vec::new(),
            },
        });
    }
    out
}

/// The host compile a scenario's prebuilt images were packaged from: the
/// changed copy's for the change scenario, the tree's own otherwise (the
/// warm scenario reuses the cold one's binaries, so it costs nothing).
fn host_compile_ms(report: &BuildReport, base: Base, scenario: Scenario) -> f64 {
    let wanted = match scenario {
        Scenario::Change => Scenario::Change,
        Scenario::Cold => Scenario::Cold,
        Scenario::Warm => return 0.0,
    };
    report
        .host_compiles
        .iter()
        .filter(|c| c.base == base && c.scenario == wanted)
        .map(|c| c.elapsed_ms as f64)
        .sum()
}

/// Runs the fleet of every measured strategy and base on the fixture.
async fn runtime(
    engine: &Engine,
    config: &FleetConfig,
    options: &BenchOptions,
    measured: &[(Strategy, Base)],
    progress: &mut impl FnMut(&str),
) -> Result<RunReport, BenchError> {
    let root = config.root();
    let fixture = root.join("fixtures/telemetry.jsonl");
    let text = std::fs::read_to_string(&fixture)
        .map_err(|e| BenchError::Fixture(format!("reading {}: {e}", fixture.display())))?;
    let expected_path = root.join("fixtures/expected/pipeline.json");
    let expected =
        ExpectedOutputs::load(&expected_path).map_err(|e| BenchError::Fixture(e.to_string()))?;
    let mut strategies: Vec<Strategy> = measured.iter().map(|m| m.0).collect();
    strategies.dedup();
    let mut bases: Vec<Base> = measured.iter().map(|m| m.1).collect();
    bases.sort();
    bases.dedup();
    let run_options = RunOptions {
        strategies,
        bases,
        repeat: options.repeat(),
        lines: text.lines().map(str::to_string).collect(),
        is_fixture: true,
        rate: None,
        kafka: None,
        database_url: None,
        expected: Some(expected),
        results_dir: Some(root.join(run::RESULTS_DIR)),
    };
    run::run(engine, config, &run_options, |line| progress(line))
        .await
        .map_err(|e| BenchError::Fixture(format!("running the fleet: {e}")))
}

/// Copies each strategy's runtime summary into its result.
fn attach_runtime(
    results: &mut [StrategyResult],
    report: &RunReport,
    not_working: &mut Vec<String>,
) {
    for summary in &report.strategies {
        let Some(result) = results
            .iter_mut()
            .find(|r| r.strategy == summary.strategy && r.base == summary.base)
        else {
            continue;
        };
        if !summary.verified {
            not_working.push(format!(
                "{} on {}: the result tables did not equal the expected outputs.",
                summary.strategy.name(),
                summary.base.name()
            ));
        }
        result.runtime = Some(summary.clone());
    }
}

/// Now as RFC 3339 in UTC, to the second (`2026-12-04T05:01:02Z`).
pub fn now_rfc3339() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(seconds)
}

/// `seconds` since the Unix epoch as RFC 3339 in UTC.
pub fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_360_462), "2026-12-04T05:01:02Z");
    }
}
