//! Command-line interface: the arguments of every subcommand, and the code
//! that runs each one and prints its human or JSON output.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};

use crate::bootstrap::{self, Action, Bootstrap, ImageOutcome};
use crate::config::{FleetConfig, ImageSource};
use crate::docker::Engine;
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
    Build,
    /// Analyse images and fleets: sizes, layers, sharing, waste.
    Analyze,
    /// Run the fleet of a strategy against the broker and PostgreSQL.
    Run,
    /// Bootstrap, build, analyse, run and report in one command.
    Bench,
    /// Write the Markdown, JSON and chart reports of a run.
    Report,
    /// Compare a report with a baseline and fail on regressions.
    Gate,
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

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let mut config = FleetConfig::load(&cli.config)?;
    if let Some(source) = cli.images {
        config.images.set_all(source);
    }
    match cli.command {
        Command::Bootstrap(args) => bootstrap(&config, &args, cli.json).await,
        Command::Generate(args) => generate(&args),
        Command::Build => not_built("build", 4),
        Command::Analyze => not_built("analyze", 5),
        Command::Run => not_built("run", 6),
        Command::Bench => not_built("bench", 7),
        Command::Report => not_built("report", 7),
        Command::Gate => not_built("gate", 7),
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

fn not_built(command: &str, issue: u32) -> anyhow::Result<i32> {
    eprintln!(
        "fleetbench {command}: not built yet (tracked in issue {issue}); \
         only `fleetbench bootstrap` works in this version"
    );
    Ok(EXIT_ERROR)
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
