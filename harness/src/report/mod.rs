//! The bench report: one versioned document holding everything a
//! `fleetbench bench` measured (the environment it ran in, per strategy and
//! base the sizes, builds and runtime figures), the flat list of metrics the
//! gate compares, and its renderings: `report.json`, an architecture
//! decision record in `report.md`, and SVG charts.
//!
//! Every repeated measurement is kept as min, median and max; a single run
//! has all three equal. Sizes follow the definitions of the design
//! (`../shared/DESIGN.md`): image size is the sum of the layers'
//! uncompressed tar sizes, stored size counts each distinct layer once,
//! transfer is the distinct layers compressed.

pub mod charts;
pub mod markdown;
pub mod metrics;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::build::Scenario;
use crate::run::{Ceiling, Spread, StrategyRuns};
use crate::strategy::{Base, Strategy};

pub use metrics::{Metric, MetricKind};

/// Version of the report's JSON layout; raised whenever a field changes
/// meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

/// Errors while writing or reading a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or directory could not be written or read.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done (`writing`, `reading`).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A report file is not a report of a layout this version reads.
    #[error("report {path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A chart could not be drawn.
    #[error("drawing chart {path}: {problem}")]
    Chart {
        /// The SVG file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

/// Everything one bench measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// Always [`SCHEMA_VERSION`] for this layout.
    pub schema_version: u32,
    /// When the bench finished, RFC 3339 in UTC.
    pub created: String,
    /// Where it ran.
    pub environment: Environment,
    /// How it was asked to run.
    pub settings: BenchSettings,
    /// Per strategy and base, in the order they ran.
    pub results: Vec<StrategyResult>,
    /// What the broker and PostgreSQL do alone, when the runtime ran.
    pub ceiling: Option<Ceiling>,
    /// Whether every strategy's result tables were identical to every other's.
    pub identical_across_strategies: Option<bool>,
    /// The flat list of figures the gate compares.
    pub metrics: Vec<Metric>,
    /// Parts that did not work in this run, each a sentence; the report
    /// states them instead of leaving a gap.
    pub not_working: Vec<String>,
}

/// The machine, engine, source and support images of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Environment {
    /// The commit measured, or `unknown`.
    pub revision: String,
    /// Whether the work tree had uncommitted changes.
    pub dirty: bool,
    /// The Docker Engine's version.
    pub docker_version: String,
    /// The Docker Engine API version.
    pub docker_api_version: String,
    /// The engine's endpoint (`DOCKER_HOST` or the local socket).
    pub docker_endpoint: String,
    /// Operating system and kernel of the engine's host.
    pub os: String,
    /// Processor architecture.
    pub arch: String,
    /// Logical cores of the engine's host.
    pub cpus: u64,
    /// Memory of the engine's host, bytes.
    pub memory_bytes: u64,
    /// `rustc --version` on the host.
    pub rustc: String,
    /// The support images used, with their digests.
    pub images: Vec<SupportImage>,
}

/// One support image (base, builder, broker, PostgreSQL) as used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupportImage {
    /// `base`, `builder`, `broker` or `postgres`.
    pub role: String,
    /// The reference used.
    pub reference: String,
    /// `local` (bootstrap) or `registry`.
    pub source: String,
    /// The image id (digest of its configuration), or `absent`.
    pub id: String,
}

/// How a bench was asked to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSettings {
    /// `quick` or `full`.
    pub mode: String,
    /// `prebuilt` or `in-docker`.
    pub compile_mode: String,
    /// Cargo profile of the host compile (prebuilt mode).
    pub profile: String,
    /// Repeats of every build and run.
    pub repeat: usize,
    /// The worker the change scenario edits.
    pub change_worker: String,
    /// Strategies, in order.
    pub strategies: Vec<Strategy>,
    /// Bases, in order.
    pub bases: Vec<Base>,
    /// Whether the runtime benchmark ran.
    pub runtime: bool,
}

/// Everything measured of one strategy on one base.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategyResult {
    /// The strategy.
    pub strategy: Strategy,
    /// The base.
    pub base: Base,
    /// Its images, as built warm.
    pub images: Vec<ImageResult>,
    /// The fleet of those images.
    pub fleet: FleetSizes,
    /// Build time per scenario.
    pub builds: Vec<ScenarioBuild>,
    /// Runtime figures over the repeats, and every run's, when the runtime ran.
    pub runtime: Option<StrategyRuns>,
}

/// One image of a strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageResult {
    /// Name within the strategy (`kpi-worker`, `unified`).
    pub name: String,
    /// The tag.
    pub tag: String,
    /// The image id.
    pub id: String,
    /// Uncompressed size: the sum of its layers' tar sizes.
    pub size_bytes: u64,
    /// The layers gzip-compressed.
    pub gzip_bytes: u64,
    /// The layers zstd-compressed.
    pub zstd_bytes: u64,
    /// Number of layers.
    pub layer_count: usize,
    /// Bytes of files a later layer overwrites or deletes.
    pub wasted_bytes: u64,
    /// Bytes in layers another image of the fleet also uses.
    pub shared_bytes: u64,
    /// Bytes in layers only this image has.
    pub unique_bytes: u64,
    /// Whether its configured user is root.
    pub runs_as_root: bool,
}

/// The sizes of a strategy's fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSizes {
    /// Images in the fleet.
    pub image_count: usize,
    /// Sum of the images' sizes.
    pub naive_bytes: u64,
    /// Distinct layers, uncompressed.
    pub stored_bytes: u64,
    /// Distinct layers, gzip.
    pub transfer_gzip_bytes: u64,
    /// Distinct layers, zstd.
    pub transfer_zstd_bytes: u64,
    /// Distinct layers.
    pub distinct_layers: usize,
    /// Same file content in distinct layers, bytes beyond the first copy.
    pub duplicate_bytes: u64,
    /// Bytes of the distinct layers that more than one image uses.
    pub shared_bytes: u64,
    /// Bytes of the distinct layers that only one image uses.
    pub unique_bytes: u64,
    /// Gzip bytes a node running the whole fleet pulls after the one-worker
    /// change (layers new in the change build), when that scenario ran.
    pub pull_after_change_gzip_bytes: Option<u64>,
}

/// Build time of one scenario, over the repeats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioBuild {
    /// The scenario.
    pub scenario: Scenario,
    /// Wall time of all the strategy's image builds together, ms (the host
    /// compile of the prebuilt mode not included; see `host_compile_ms`).
    pub images_ms: Spread,
    /// Wall time of the host compile the images were packaged from, ms
    /// (prebuilt mode; zero in-docker).
    pub host_compile_ms: Spread,
    /// Dockerfile steps taken from the cache, of all steps (last repeat).
    pub cached_steps: usize,
    /// Dockerfile steps in all.
    pub total_steps: usize,
    /// Images whose digest changed (change scenario): what to redeploy.
    pub redeployed: Vec<String>,
}

impl BenchReport {
    /// A report of `results`, stamped now, with its metrics derived from
    /// the results.
    pub fn new(
        environment: Environment,
        settings: BenchSettings,
        results: Vec<StrategyResult>,
        not_working: Vec<String>,
    ) -> Self {
        let metrics = metrics::collect(&results, settings.repeat);
        Self {
            schema_version: SCHEMA_VERSION,
            created: crate::bench::now_rfc3339(),
            environment,
            settings,
            results,
            ceiling: None,
            identical_across_strategies: None,
            metrics,
            not_working,
        }
    }

    /// The result of `strategy` on `base`, if it was measured.
    pub fn result(&self, strategy: Strategy, base: Base) -> Option<&StrategyResult> {
        self.results
            .iter()
            .find(|r| r.strategy == strategy && r.base == base)
    }

    /// Reads a report written by [`BenchReport::write`], refusing other
    /// layouts with the version found.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = read(path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(path, format!("not JSON: {e}")))?;
        check_version(path, &value)?;
        serde_json::from_value(value).map_err(|e| invalid(path, e.to_string()))
    }

    /// Writes `report.json`, `report.md` and the charts into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let json = dir.join("report.json");
        let text = serde_json::to_string_pretty(self).expect("a report always serialises");
        write(&json, &(text + "\n"))?;
        let mut written = vec![json];
        let charts = charts::write_all(self, dir)?;
        let markdown = dir.join("report.md");
        write(&markdown, &markdown::render(self, &charts))?;
        written.push(markdown);
        written.extend(charts);
        Ok(written)
    }
}

/// Checks that a report's `schema_version` is one this version reads.
pub fn check_version(path: &Path, value: &serde_json::Value) -> Result<(), ReportError> {
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(SCHEMA_VERSION) => Ok(()),
        Some(v) => Err(invalid(
            path,
            format!("schema_version {v}, this fleetbench reads {SCHEMA_VERSION}"),
        )),
        None => Err(invalid(path, "no schema_version: not a fleetbench report")),
    }
}

/// Reads a file, naming it when that fails.
pub fn read(path: &Path) -> Result<String, ReportError> {
    std::fs::read_to_string(path).map_err(io("reading", path))
}

/// Writes a file, naming it when that fails.
pub fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(io("writing", path))
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ReportError {
    let path = path.to_path_buf();
    move |source| ReportError::Io {
        operation,
        path,
        source,
    }
}

fn invalid(path: &Path, problem: impl Into<String>) -> ReportError {
    ReportError::Invalid {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}
