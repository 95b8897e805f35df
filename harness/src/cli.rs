//! Command-line interface: the arguments of every subcommand, and the code
//! that runs each one and prints its human or JSON output.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};

use crate::analyze;
use crate::bench;
use crate::bootstrap::{self, Action, Bootstrap, ImageOutcome};
use crate::build::{self as builds, BuildOptions, BuildReport, CompileMode, Scenario};
use crate::config::{FleetConfig, ImageSource};
use crate::docker::Engine;
use crate::gate;
use crate::progress::Step;
use crate::report::{BenchReport, MetricKind};
use crate::strategy::{Base, Strategy};
use crate::telemetry;
use crate::units::{format_bytes, format_duration_ms};

/// Exit code of a successful run.
pub const EXIT_OK: i32 = 0;
/// Exit code when a gate found a regression.
pub const EXIT_GATE_FAILED: i32 = 1;
/// Exit code of an error: bad input, missing tool, failed build.
pub const EXIT_ERROR: i32 = 2;

/// One image for all workers, or one per worker? fleetbench builds both,
/// measures them and reports.
#[derive(Debug, Parser)]
#[command(name = "fleetbench", version, about, long_about = None)]
pub struct Cli {
    /// The fleet configuration file.
    #[arg(
        long,
        global = true,
        default_value = "fleetbench.toml",
        env = "FLEETBENCH_CONFIG"
    )]
    pub config: PathBuf,

    /// Take every support image from this source, whatever the file says.
    #[arg(long, global = true, value_enum)]
    pub images: Option<ImageSource>,

    /// Print results as JSON on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log lines as JSON on stderr (for log collectors).
    #[arg(long, global = true)]
    pub log_json: bool,

    /// More log detail: -v debug, -vv trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, in the order a full benchmark runs them.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the base, builder, broker and PostgreSQL images without a registry.
    Bootstrap(BootstrapArgs),
    /// Write the deterministic telemetry fixture and its injected anomalies.
    Generate(GenerateArgs),
    /// Build the packaging strategies' images and time the builds.
    Build(BuildArgs),
    /// Analyse images and fleets: sizes, layers, sharing, waste.
    Analyze(AnalyzeArgs),
    /// Run the fleet of a strategy against the broker and PostgreSQL.
    Run(RunArgs),
    /// Bootstrap, build, analyse, run and report in one command.
    Bench(BenchArgs),
    /// Write the Markdown and chart renderings of a bench report again.
    Report(ReportArgs),
    /// Compare a report with a baseline and fail on regressions.
    Gate(GateArgs),
}

/// Arguments of `fleetbench bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Package binaries compiled once on the host, measure once (the default).
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,

    /// Compile inside Docker as each Dockerfile does, repeat everything three times.
    #[arg(long)]
    pub full: bool,

    /// Strategies (`all`, or names); default: `[bench] strategies` of fleetbench.toml.
    #[arg(long = "strategy", value_delimiter = ',', num_args = 1..)]
    pub strategies: Vec<String>,

    /// Bases (`all`, debian, scratch); default: `[bench] bases` of fleetbench.toml.
    #[arg(long = "base", value_delimiter = ',', num_args = 1..)]
    pub bases: Vec<String>,

    /// Cargo profile of the host compile in quick mode (`dev` is faster to
    /// build; its figures are comparable only with other `dev` benches).
    #[arg(long, default_value = "release")]
    pub profile: String,

    /// Measure sizes and builds only; do not run the fleet.
    #[arg(long)]
    pub no_run: bool,

    /// Directory the reports go into.
    #[arg(long, default_value = "reports")]
    pub reports: PathBuf,
}

/// Arguments of `fleetbench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A bench's `report.json`, or the directory holding it.
    #[arg(default_value = "reports/latest")]
    pub report: PathBuf,

    /// Where the Markdown and charts go (default: beside the report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `fleetbench gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    /// The committed baseline.
    #[arg(long, default_value = "fixtures/baseline.json")]
    pub baseline: PathBuf,

    /// The report to check: a `report.json` or the directory holding it.
    /// With `--update-baseline`, several reports may be given.
    #[arg(default_value = "reports/latest", num_args = 1..)]
    pub reports: Vec<PathBuf>,

    /// Write the report's metrics as the new baseline instead of comparing;
    /// of several reports, each metric's median of their medians and the
    /// lowest and highest value any of them saw.
    #[arg(long)]
    pub update_baseline: bool,

    /// List every metric, not only those that did not pass plainly.
    #[arg(long)]
    pub all: bool,
}

/// Arguments of `fleetbench bootstrap`.
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// Rebuild every local image even if its recipe hash matches.
    #[arg(long)]
    pub force: bool,

    /// Bootstrap only these images (comma-separated roles).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<bootstrap::Role>,

    /// Directory for the logs of debootstrap, cargo and docker build.
    #[arg(long, default_value = "target/fleetbench/logs/bootstrap")]
    pub logs: PathBuf,
}

/// Arguments of `fleetbench build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Strategies to build (`all`, or names: separated, unified, specialized, layered, multicall).
    #[arg(long = "strategy", value_delimiter = ',', num_args = 1.., default_value = "all")]
    pub strategies: Vec<String>,

    /// Runtime bases (`all`, debian, scratch).
    #[arg(long = "base", value_delimiter = ',', num_args = 1.., default_value = "debian")]
    pub bases: Vec<String>,

    /// Compile modes (`all`, in-docker, prebuilt).
    #[arg(long = "mode", value_delimiter = ',', num_args = 1.., default_value = "prebuilt")]
    pub modes: Vec<String>,

    /// Scenarios (`all`, cold, warm, change).
    #[arg(long = "scenario", value_delimiter = ',', num_args = 1.., default_value = "all")]
    pub scenarios: Vec<String>,

    /// The worker whose source the change scenario edits by one line.
    #[arg(long, default_value = "alert-manager")]
    pub change_worker: String,

    /// Build only these images of each strategy (a worker's name, `unified`, `fleet`, ...).
    #[arg(long = "only", value_delimiter = ',', value_name = "IMAGE")]
    pub only: Vec<String>,

    /// Cargo profile of the prebuilt mode's host compile (`dev` is faster
    /// to build, for checks; its images are not comparable with release ones).
    #[arg(long, default_value = "release")]
    pub profile: String,

    /// Build every image twice without cache and compare their layers.
    #[arg(long)]
    pub verify_reproducible: bool,

    /// Directory of the per-image build logs.
    #[arg(long, default_value = "target/fleetbench/logs/build")]
    pub logs: PathBuf,
}

/// Arguments of `fleetbench run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Strategies to run, one after the other (`all`, or names).
    #[arg(long = "strategy", value_delimiter = ',', num_args = 1.., default_value = "all")]
    pub strategies: Vec<String>,

    /// Runtime bases (`all`, debian, scratch).
    #[arg(long = "base", value_delimiter = ',', num_args = 1.., default_value = "debian")]
    pub bases: Vec<String>,

    /// Runs of each strategy and base (min, median and max are reported).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,

    /// Feed a generated load of about this many events instead of the fixture.
    #[arg(long)]
    pub events: Option<usize>,

    /// Feed at this many events per second (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<u64>,

    /// Use this broker (host:port,...) instead of starting one.
    #[arg(long)]
    pub kafka: Option<String>,

    /// Use this PostgreSQL (postgres://...) instead of starting one.
    #[arg(long)]
    pub database_url: Option<String>,

    /// The fixture's expected outputs.
    #[arg(long, default_value = "fixtures/expected/pipeline.json")]
    pub expected: PathBuf,
}

/// Arguments of `fleetbench generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Generator settings (seed, series, duration, anomalies).
    #[arg(long, default_value = "fixtures/generator.toml")]
    pub settings: PathBuf,

    /// Where the events go, as JSON lines.
    #[arg(long, default_value = "fixtures/telemetry.jsonl")]
    pub out: PathBuf,

    /// Where the list of injected anomalies goes, as JSON.
    #[arg(long, default_value = "fixtures/expected/anomalies.json")]
    pub anomalies_out: PathBuf,
}

/// Arguments of `fleetbench analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The fleet's images: engine references, docker-archive tarballs or OCI
    /// layout directories (force one with `docker-daemon:`,
    /// `docker-archive:` or `oci:`).
    #[arg(id = "image", value_name = "IMAGE")]
    pub images: Vec<String>,

    /// Cost a node that runs only these images (comma-separated; repeatable).
    #[arg(long, value_name = "IMAGE,IMAGE")]
    pub subset: Vec<String>,

    /// Images a node holds before a change (for the bytes to pull).
    #[arg(long, num_args = 1.., value_name = "IMAGE", requires = "after")]
    pub before: Vec<String>,

    /// Images the node runs after the change.
    #[arg(long, num_args = 1.., value_name = "IMAGE", requires = "before")]
    pub after: Vec<String>,

    /// Rows kept in lists (largest files, wasted files, duplicates).
    #[arg(long, default_value_t = 10)]
    pub top: usize,

    /// Time the analysis of this engine image against `skopeo copy
    /// docker-daemon:IMAGE oci:DIR`, side by side.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["image", "before", "after", "subset"])]
    pub versus_skopeo: Option<String>,

    /// Runs of each command for `--versus-skopeo`.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    // `analyze` works on any images, so it needs no fleet file.
    if let Command::Analyze(args) = &cli.command {
        return analyze_command(args, cli.json).await;
    }
    let mut config = FleetConfig::load(&cli.config)?;
    if let Some(source) = cli.images {
        config.images.set_all(source);
    }
    match cli.command {
        Command::Bootstrap(args) => bootstrap(&config, &args, cli.json).await,
        Command::Generate(args) => generate(&args),
        Command::Build(args) => build(&config, &args, cli.json).await,
        Command::Analyze(args) => analyze_command(&args, cli.json).await,
        Command::Run(args) => run_command(&config, &args, cli.json).await,
        Command::Bench(args) => bench_command(&config, &args, cli.json).await,
        Command::Report(args) => report_command(&config, &args),
        Command::Gate(args) => gate_command(&config, &args, cli.json),
    }
}

fn generate(args: &GenerateArgs) -> anyhow::Result<i32> {
    let settings = telemetry::GeneratorSettings::load(&args.settings)?;
    let generated = telemetry::generate(&settings);
    let write = |path: &PathBuf, text: String| -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("creating directory {}: {e}", dir.display()))?;
        }
        std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    };
    write(&args.out, telemetry::to_json_lines(&generated.events))?;
    write(
        &args.anomalies_out,
        serde_json::to_string_pretty(&generated.anomalies)? + "\n",
    )?;
    println!(
        "{} events ({} series) to {}, {} injected anomalies to {}",
        generated.events.len(),
        settings.sites.len()
            * settings.services.len()
            * settings.entities_per_service as usize
            * settings.metrics.len(),
        args.out.display(),
        generated.anomalies.len(),
        args.anomalies_out.display()
    );
    Ok(EXIT_OK)
}

/// Resolves a list of names where `all` means every value, naming the
/// option and the accepted values when a name is unknown.
fn pick<T: clap::ValueEnum + Copy + PartialEq>(
    option: &str,
    names: &[String],
    all: &[T],
) -> anyhow::Result<Vec<T>> {
    let mut picked = Vec::new();
    for name in names {
        let found: Vec<T> = if name == "all" {
            all.to_vec()
        } else {
            vec![T::from_str(name, true).map_err(|_| {
                let known: Vec<String> = all
                    .iter()
                    .filter_map(|v| v.to_possible_value())
                    .map(|v| v.get_name().to_string())
                    .collect();
                anyhow::anyhow!(
                    "{option}: unknown value '{name}' (expected all, {})",
                    known.join(", ")
                )
            })?]
        };
        for value in found {
            if !picked.contains(&value) {
                picked.push(value);
            }
        }
    }
    Ok(picked)
}

async fn build(config: &FleetConfig, args: &BuildArgs, json: bool) -> anyhow::Result<i32> {
    let root = config.root();
    let absolute = |path: &PathBuf| {
        if path.is_absolute() {
            path.clone()
        } else {
            root.join(path)
        }
    };
    let options = BuildOptions {
        strategies: pick("--strategy", &args.strategies, &Strategy::ALL)?,
        bases: pick("--base", &args.bases, &Base::ALL)?,
        modes: pick("--mode", &args.modes, &CompileMode::ALL)?,
        scenarios: pick(
            "--scenario",
            &args.scenarios,
            &[Scenario::Cold, Scenario::Warm, Scenario::Change],
        )?,
        change_worker: args.change_worker.clone(),
        only_images: args.only.clone(),
        profile: args.profile.clone(),
        logs: absolute(&args.logs),
        work: root.join("target/fleetbench/build"),
    };
    let engine = Engine::connect().await?;
    if args.verify_reproducible {
        let step = Step::start("building twice without cache");
        let results =
            builds::verify_reproducible(&engine, config, &options, |line| step.update(line))
                .await?;
        step.finish();
        let failed = results.iter().filter(|r| !r.reproducible).count();
        if json {
            println!("{}", serde_json::to_string_pretty(&results)?);
        } else {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header(["image", "reproducible", "differing layers and files"]);
            for result in &results {
                let detail = result
                    .differing_layers
                    .iter()
                    .map(|layer| {
                        let files = if layer.files.is_empty() {
                            "same contents; metadata differs".to_string()
                        } else {
                            layer.files.join(", ")
                        };
                        format!("layer {}: {files}", layer.index)
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                table.add_row(vec![
                    Cell::new(&result.tag),
                    Cell::new(if result.reproducible { "yes" } else { "NO" }),
                    Cell::new(detail),
                ]);
            }
            println!("{table}");
            println!(
                "{} of {} images reproducible",
                results.len() - failed,
                results.len()
            );
        }
        return Ok(if failed == 0 { EXIT_OK } else { EXIT_ERROR });
    }
    let step = Step::start("building");
    let report = builds::Builder::new(&engine, config, options.clone())
        .run(|line| step.update(line))
        .await?;
    step.finish();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", build_table(&report));
        for compile in &report.host_compiles {
            println!(
                "host cargo build --release ({}, {}): {}",
                compile.base.name(),
                compile.scenario.name(),
                format_duration_ms(compile.elapsed_ms)
            );
        }
        for &strategy in &options.strategies {
            for &base in &options.bases {
                for &mode in &options.modes {
                    if options.scenarios.contains(&Scenario::Change) {
                        let redeployed = report.redeployed(strategy, base, mode);
                        println!(
                            "{} {} {}: a change to {} redeploys {} image(s): {}",
                            strategy.name(),
                            base.name(),
                            mode.name(),
                            report.change_worker,
                            redeployed.len(),
                            redeployed.join(", ")
                        );
                    }
                }
            }
        }
        println!("build logs: {}", options.logs.display());
    }
    Ok(EXIT_OK)
}

async fn run_command(config: &FleetConfig, args: &RunArgs, json: bool) -> anyhow::Result<i32> {
    if args.repeat == 0 {
        anyhow::bail!("--repeat: must be at least 1");
    }
    let root = config.root();
    let (lines, is_fixture) = match args.events {
        None => {
            let path = root.join("fixtures/telemetry.jsonl");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("reading the fixture {}: {e}", path.display()))?;
            (text.lines().map(str::to_string).collect::<Vec<_>>(), true)
        }
        Some(events) => {
            let path = root.join("fixtures/generator.toml");
            let mut settings = telemetry::GeneratorSettings::load(&path)?;
            let series = settings.sites.len()
                * settings.services.len()
                * settings.entities_per_service as usize
                * settings.metrics.len();
            let steps = events.div_ceil(series.max(1)) as u64;
            settings.duration_s = (steps * u64::from(settings.interval_ms) / 1000).max(1) as u32;
            let generated = telemetry::generate(&settings);
            let lines = telemetry::to_json_lines(&generated.events)
                .lines()
                .map(str::to_string)
                .collect();
            (lines, false)
        }
    };
    let expected_path = if args.expected.is_absolute() {
        args.expected.clone()
    } else {
        root.join(&args.expected)
    };
    let expected = if is_fixture {
        Some(crate::verify::ExpectedOutputs::load(&expected_path)?)
    } else {
        None
    };
    let options = crate::run::RunOptions {
        strategies: pick("--strategy", &args.strategies, &Strategy::ALL)?,
        bases: pick("--base", &args.bases, &Base::ALL)?,
        repeat: args.repeat,
        lines,
        is_fixture,
        rate: args.rate,
        kafka: args.kafka.clone(),
        database_url: args.database_url.clone(),
        expected,
        results_dir: Some(root.join(crate::run::RESULTS_DIR)),
    };
    let engine = Engine::connect().await?;
    let step = Step::start("running");
    let outcome = tokio::select! {
        outcome = crate::run::run(&engine, config, &options, |line| step.update(line)) => outcome,
        _ = tokio::signal::ctrl_c() => {
            step.finish();
            crate::run::remove_leftovers(&engine).await?;
            anyhow::bail!("interrupted; every container the run started was removed");
        }
    };
    step.finish();
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            crate::run::remove_leftovers(&engine).await?;
            return Err(error.into());
        }
    };
    let verified =
        report.identical_across_strategies && report.strategies.iter().all(|s| s.verified);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", run_table(&report));
        println!(
            "ceiling: broker {:.0} events/s (rdkafka alone), PostgreSQL {:.0} rows/s (batches of 500)",
            report.ceiling.broker_eps, report.ceiling.postgres_rows_per_s
        );
        println!(
            "results identical across strategies: {}",
            if report.identical_across_strategies {
                "yes"
            } else {
                "NO"
            }
        );
        for summary in &report.strategies {
            for run in summary.runs.iter().filter(|r| !r.mismatches.is_empty()) {
                for mismatch in &run.mismatches {
                    println!(
                        "{} {}: table {} differs from the expected outputs",
                        summary.strategy.name(),
                        summary.base.name(),
                        mismatch.table
                    );
                }
            }
        }
    }
    Ok(if verified { EXIT_OK } else { EXIT_ERROR })
}

/// One row per strategy and base: medians with [min-max] of the repeats.
fn run_table(report: &crate::run::RunReport) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "strategy",
        "base",
        "runs",
        "events/s",
        "of ceiling",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "startup (slowest)",
        "memory (9 workers)",
        "CPU s",
        "verified",
    ]);
    let spread = |s: &crate::run::Spread, digits: usize| {
        Cell::new(format!(
            "{:.*} [{:.*}-{:.*}]",
            digits, s.median, digits, s.min, digits, s.max
        ))
        .set_alignment(CellAlignment::Right)
    };
    for s in &report.strategies {
        table.add_row(vec![
            Cell::new(s.strategy.name()),
            Cell::new(s.base.name()),
            Cell::new(s.runs.len()).set_alignment(CellAlignment::Right),
            spread(&s.throughput_eps, 0),
            spread(&s.ceiling_ratio, 2),
            spread(&s.latency_p50_ms, 0),
            spread(&s.latency_p95_ms, 0),
            spread(&s.latency_p99_ms, 0),
            Cell::new(format!("{:.0} ms", s.startup_max_ms.median))
                .set_alignment(CellAlignment::Right),
            Cell::new(format_bytes(s.memory_total_bytes.median as u64))
                .set_alignment(CellAlignment::Right),
            spread(&s.cpu_total_seconds, 1),
            Cell::new(if s.verified { "yes" } else { "NO" }),
        ]);
    }
    table
}

/// One row per strategy, base, mode and scenario: summed build time, cache
/// hits and images changed.
fn build_table(report: &BuildReport) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "strategy",
        "base",
        "mode",
        "scenario",
        "images",
        "time",
        "cached steps",
        "size",
        "changed",
    ]);
    let mut groups: Vec<(Strategy, Base, CompileMode, Scenario)> = Vec::new();
    for b in &report.builds {
        let key = (b.strategy, b.base, b.mode, b.scenario);
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    for key in groups {
        let rows: Vec<_> = report
            .builds
            .iter()
            .filter(|b| (b.strategy, b.base, b.mode, b.scenario) == key)
            .collect();
        let elapsed: u64 = rows.iter().map(|b| b.elapsed_ms).sum();
        let cached: usize = rows.iter().map(|b| b.cached_steps).sum();
        let steps: usize = rows.iter().map(|b| b.total_steps).sum();
        let size: u64 = rows.iter().map(|b| b.size_bytes).sum();
        let changed = match key.3 {
            Scenario::Change => rows
                .iter()
                .filter(|b| b.changed == Some(true))
                .count()
                .to_string(),
            _ => "-".into(),
        };
        table.add_row(vec![
            Cell::new(key.0.name()),
            Cell::new(key.1.name()),
            Cell::new(key.2.name()),
            Cell::new(key.3.name()),
            right(rows.len().to_string()),
            right(format_duration_ms(elapsed)),
            right(format!("{cached}/{steps}")),
            right(format_bytes(size)),
            right(changed),
        ]);
    }
    table
}

/// A path from the command line, relative to the project root.
fn from_root(config: &FleetConfig, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        config.root().join(path)
    }
}

/// A report argument: a `report.json`, or a directory holding one.
fn report_file(config: &FleetConfig, path: &Path) -> PathBuf {
    let path = from_root(config, path);
    if path.is_dir() {
        path.join("report.json")
    } else {
        path
    }
}

async fn bench_command(config: &FleetConfig, args: &BenchArgs, json: bool) -> anyhow::Result<i32> {
    let strategies = if args.strategies.is_empty() {
        config.bench.strategies.clone()
    } else {
        pick("--strategy", &args.strategies, &Strategy::ALL)?
    };
    let bases = if args.bases.is_empty() {
        config.bench.bases.clone()
    } else {
        pick("--base", &args.bases, &Base::ALL)?
    };
    let options = bench::BenchOptions {
        full: args.full,
        strategies,
        bases,
        profile: args.profile.clone(),
        runtime: !args.no_run,
        reports: args.reports.clone(),
    };
    let engine = Engine::connect().await?;
    let step = Step::start("benchmarking");
    let outcome = tokio::select! {
        outcome = bench::bench(&engine, config, &options, |line| step.update(line)) => outcome?,
        _ = tokio::signal::ctrl_c() => {
            step.finish();
            crate::run::remove_leftovers(&engine).await?;
            anyhow::bail!("interrupted; every container the bench started was removed");
        }
    };
    let elapsed = step.finish();
    let report = &outcome.report;
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{}", bench_table(report));
        for line in &report.not_working {
            println!("NOT WORKING: {line}");
        }
        println!(
            "report: {} (also {}), in {}",
            outcome.dir.display(),
            outcome.latest.display(),
            format_duration_ms(elapsed.as_millis() as u64)
        );
    }
    Ok(if report.not_working.is_empty() {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}

/// One row per strategy and base: fleet sizes, builds and runtime.
fn bench_table(report: &BenchReport) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "strategy",
        "base",
        "images",
        "naive",
        "stored",
        "transfer gzip",
        "cold build",
        "change rebuild",
        "redeployed",
        "events/s",
        "p95 ms",
        "verified",
    ]);
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    for r in &report.results {
        let build = |scenario: Scenario| {
            r.builds
                .iter()
                .find(|b| b.scenario == scenario)
                .map_or("-".into(), |b| {
                    format_duration_ms((b.images_ms.median + b.host_compile_ms.median) as u64)
                })
        };
        let redeployed = r
            .builds
            .iter()
            .find(|b| b.scenario == Scenario::Change)
            .map_or("-".into(), |b| b.redeployed.len().to_string());
        let (eps, p95, verified) = match &r.runtime {
            Some(run) => (
                format!("{:.0}", run.throughput_eps.median),
                format!("{:.0}", run.latency_p95_ms.median),
                if run.verified { "yes" } else { "NO" },
            ),
            None => ("-".into(), "-".into(), "-"),
        };
        table.add_row(vec![
            Cell::new(r.strategy.name()),
            Cell::new(r.base.name()),
            right(r.fleet.image_count.to_string()),
            right(format_bytes(r.fleet.naive_bytes)),
            right(format_bytes(r.fleet.stored_bytes)),
            right(format_bytes(r.fleet.transfer_gzip_bytes)),
            right(build(Scenario::Cold)),
            right(build(Scenario::Change)),
            right(redeployed),
            right(eps),
            right(p95),
            Cell::new(verified),
        ]);
    }
    table
}

fn report_command(config: &FleetConfig, args: &ReportArgs) -> anyhow::Result<i32> {
    let path = report_file(config, &args.report);
    let report = BenchReport::load(&path)?;
    let dir = match &args.out {
        Some(out) => from_root(config, out),
        None => path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    for file in report.write(&dir)? {
        println!("{}", file.display());
    }
    Ok(EXIT_OK)
}

fn gate_command(config: &FleetConfig, args: &GateArgs, json: bool) -> anyhow::Result<i32> {
    let baseline_path = from_root(config, &args.baseline);
    if args.update_baseline {
        let mut reports = Vec::new();
        for given in &args.reports {
            let path = report_file(config, given);
            let report = BenchReport::load(&path)?;
            reports.push((path, gate::Baseline::of(&report)));
        }
        let baseline = gate::Baseline::merged(&reports)?;
        baseline.save(&baseline_path)?;
        let sources: Vec<String> = reports
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        println!(
            "baseline {} written from {} ({} metrics)",
            baseline_path.display(),
            sources.join(", "),
            baseline.metrics.len()
        );
        return Ok(EXIT_OK);
    }
    let [given] = args.reports.as_slice() else {
        anyhow::bail!(
            "gate: compares one report with the baseline, {} were given (several only with --update-baseline)",
            args.reports.len()
        );
    };
    let report_path = report_file(config, given);
    let report = BenchReport::load(&report_path)?;
    let baseline = gate::Baseline::load(&baseline_path)?;
    gate::check_comparable(&baseline, &report, &baseline_path, &report_path)?;
    let outcome = gate::compare(&baseline.metrics, &report.metrics, &config.gate);
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        println!("{}", gate_table(&outcome, args.all));
        let passed = outcome.comparisons.len() - outcome.failures;
        println!(
            "gate: {} of {} metrics pass, {} fail (baseline {} of {}, report {})",
            passed,
            outcome.comparisons.len(),
            outcome.failures,
            baseline_path.display(),
            baseline.revision,
            report_path.display()
        );
        if !report.not_working.is_empty() {
            println!(
                "the report states {} part(s) that did not work",
                report.not_working.len()
            );
        }
    }
    Ok(if outcome.passed() {
        EXIT_OK
    } else {
        EXIT_GATE_FAILED
    })
}

/// Metric, baseline, now, change, limit and verdict; plain passes only with `all`.
fn gate_table(outcome: &gate::GateOutcome, all: bool) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["metric", "baseline", "now", "change", "limit", "verdict"]);
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    for c in &outcome.comparisons {
        if !all && c.verdict == gate::Verdict::Pass {
            continue;
        }
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format_metric(c.kind, v));
        table.add_row(vec![
            Cell::new(&c.name),
            right(show(c.baseline)),
            right(show(c.now)),
            right(c.change_pct.map_or("-".into(), |p| format!("{p:+.1}%"))),
            right(show(c.allowed)),
            Cell::new(c.verdict.label()),
        ]);
    }
    table
}

/// A metric's value in its unit.
fn format_metric(kind: MetricKind, value: f64) -> String {
    match kind {
        MetricKind::ImageBytes | MetricKind::WastedBytes => format_bytes(value.max(0.0) as u64),
        MetricKind::LayerCount => format!("{value:.0}"),
        MetricKind::BuildMs => format_duration_ms(value.max(0.0) as u64),
        MetricKind::ThroughputEps => format!("{value:.0}/s"),
        MetricKind::LatencyMs => format!("{value:.0} ms"),
    }
}

async fn bootstrap(config: &FleetConfig, args: &BootstrapArgs, json: bool) -> anyhow::Result<i32> {
    let engine = Engine::connect().await?;
    let logs = if args.logs.is_absolute() {
        args.logs.clone()
    } else {
        config.root().join(&args.logs)
    };
    let outcomes = Bootstrap::new(&engine, config, logs, args.force)
        .only(&args.only)
        .run()
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        println!("{}", bootstrap_table(&outcomes));
        let built = outcomes
            .iter()
            .filter(|o| o.action == Action::Built)
            .count();
        println!(
            "{built} built, {} up to date, {} from a registry, in {}",
            outcomes
                .iter()
                .filter(|o| o.action == Action::Skipped)
                .count(),
            outcomes
                .iter()
                .filter(|o| o.action == Action::Registry)
                .count(),
            format_duration_ms(bootstrap::total_elapsed(&outcomes).as_millis() as u64),
        );
    }
    Ok(EXIT_OK)
}

fn bootstrap_table(outcomes: &[ImageOutcome]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["role", "image", "action", "why", "size", "time"]);
    for outcome in outcomes {
        let action = match outcome.action {
            Action::Built => "built",
            Action::Skipped => "skipped",
            Action::Registry => "registry",
            Action::NotSelected => "not selected",
        };
        table.add_row(vec![
            Cell::new(outcome.role),
            Cell::new(&outcome.image),
            Cell::new(action),
            Cell::new(&outcome.reason),
            Cell::new(outcome.size_bytes.map_or("absent".into(), format_bytes))
                .set_alignment(CellAlignment::Right),
            Cell::new(format_duration_ms(outcome.elapsed_ms)).set_alignment(CellAlignment::Right),
        ]);
    }
    table
}

async fn analyze_command(args: &AnalyzeArgs, json: bool) -> anyhow::Result<i32> {
    if let Some(image) = &args.versus_skopeo {
        return versus_skopeo(image, args.repeat, json).await;
    }
    let request = analyze::report::ReportRequest::from_args(
        &args.images,
        &args.subset,
        &args.before,
        &args.after,
        args.top,
    );
    if request.fleet.is_empty() {
        anyhow::bail!("analyze: name at least one image (or --before and --after)");
    }
    let mut analyzer = analyze::Analyzer::new(args.top);
    let mut images = Vec::new();
    for argument in request.all_images() {
        let step = Step::start(format!("analysing {argument}"));
        images.extend(analyzer.analyze(&argument).await?);
        step.finish();
    }
    let report = analyze::AnalyzeReport::build(images, &request)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (title, table) in report.tables(args.top) {
            println!("{title}\n{table}\n");
        }
    }
    Ok(EXIT_OK)
}

async fn versus_skopeo(image: &str, repeat: usize, json: bool) -> anyhow::Result<i32> {
    let engine = Engine::connect().await?;
    let step = Step::start(format!("timing analyze and skopeo copy of {image}"));
    let outcome =
        analyze::versus::versus_skopeo(&engine, image, repeat, |run| step.update(run)).await?;
    step.finish();
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(EXIT_OK);
    }
    println!("{image} ({})", format_bytes(outcome.size_bytes));
    println!("{}", timing_table(&outcome));
    let verdict = if outcome.skopeo_over_analyze > 1.0 {
        "analyze is faster"
    } else {
        "skopeo is faster"
    };
    println!(
        "skopeo median / analyze median = {:.2} ({verdict})",
        outcome.skopeo_over_analyze
    );
    Ok(EXIT_OK)
}

fn timing_table(outcome: &analyze::versus::VersusSkopeo) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["command", "runs", "min", "median", "max"]);
    let rows = [
        ("fleetbench analyze", &outcome.analyze),
        ("skopeo copy docker-daemon: oci:", &outcome.skopeo),
    ];
    let duration = |ms| Cell::new(format_duration_ms(ms)).set_alignment(CellAlignment::Right);
    for (command, timing) in rows {
        table.add_row(vec![
            Cell::new(command),
            Cell::new(timing.runs_ms.len()).set_alignment(CellAlignment::Right),
            duration(timing.min_ms),
            duration(timing.median_ms),
            duration(timing.max_ms),
        ]);
    }
    table
}
