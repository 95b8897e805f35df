//! Side-by-side timing of `fleetbench analyze` and
//! `skopeo copy docker-daemon:IMAGE oci:DIR` on the same engine image, in one
//! run, alternating which goes first so that neither always gets a warm
//! cache. Both read the whole image from the engine and gzip every layer.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{AnalyzeError, Analyzer};
use crate::docker::Engine;

/// The program compared against.
const SKOPEO: &str = "skopeo";

/// Wall times of repeated runs of one command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    /// Each run's wall time, in run order.
    pub runs_ms: Vec<u64>,
    /// The fastest run.
    pub min_ms: u64,
    /// The median run (the lower middle one for an even count).
    pub median_ms: u64,
    /// The slowest run.
    pub max_ms: u64,
}

impl Timing {
    /// Summarises run times given in run order.
    pub fn new(runs_ms: Vec<u64>) -> Self {
        let mut sorted = runs_ms.clone();
        sorted.sort_unstable();
        Self {
            min_ms: sorted.first().copied().unwrap_or(0),
            median_ms: sorted
                .get(sorted.len().saturating_sub(1) / 2)
                .copied()
                .unwrap_or(0),
            max_ms: sorted.last().copied().unwrap_or(0),
            runs_ms,
        }
    }
}

/// The outcome of the comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersusSkopeo {
    /// Always [`super::SCHEMA_VERSION`] for this layout.
    pub schema_version: u32,
    /// The engine image both read.
    pub image: String,
    /// Its size as the analysis measured it.
    pub size_bytes: u64,
    /// `fleetbench analyze IMAGE`.
    pub analyze: Timing,
    /// `skopeo copy docker-daemon:IMAGE oci:DIR`.
    pub skopeo: Timing,
    /// skopeo's median over the analysis' median: above 1, the analysis wins.
    pub skopeo_over_analyze: f64,
}

/// Times `runs` analyses and `runs` skopeo copies of `image`, alternately.
pub async fn versus_skopeo(
    engine: &Engine,
    image: &str,
    runs: usize,
    mut on_run: impl FnMut(&str),
) -> Result<VersusSkopeo, AnalyzeError> {
    let mut analyzer = Analyzer::with_engine(engine.clone(), 10);
    let (mut analyze_ms, mut skopeo_ms, mut size_bytes) = (Vec::new(), Vec::new(), 0);
    for run in 0..runs.max(1) {
        let skopeo_first = run % 2 == 1;
        if skopeo_first {
            on_run(&format!("run {}/{runs}: skopeo copy", run + 1));
            skopeo_ms.push(time_skopeo(engine, image).await?);
        }
        on_run(&format!("run {}/{runs}: fleetbench analyze", run + 1));
        let started = Instant::now();
        let images = analyzer.analyze(image).await?;
        analyze_ms.push(started.elapsed().as_millis() as u64);
        size_bytes = images.iter().map(|i| i.size_bytes).sum();
        if !skopeo_first {
            on_run(&format!("run {}/{runs}: skopeo copy", run + 1));
            skopeo_ms.push(time_skopeo(engine, image).await?);
        }
    }
    let (analyze, skopeo) = (Timing::new(analyze_ms), Timing::new(skopeo_ms));
    Ok(VersusSkopeo {
        schema_version: super::SCHEMA_VERSION,
        image: image.to_string(),
        size_bytes,
        skopeo_over_analyze: skopeo.median_ms as f64 / analyze.median_ms.max(1) as f64,
        analyze,
        skopeo,
    })
}

/// One `skopeo copy` into a fresh directory, removed afterwards.
async fn time_skopeo(engine: &Engine, image: &str) -> Result<u64, AnalyzeError> {
    let scratch = tempfile::tempdir().map_err(|source| AnalyzeError::Io {
        operation: "creating a directory for skopeo in",
        path: std::env::temp_dir(),
        source,
    })?;
    let mut command = tokio::process::Command::new(SKOPEO);
    command.args(["copy", "--quiet"]);
    if let Some(host) = engine
        .endpoint
        .strip_prefix("tcp://")
        .map(|_| engine.endpoint.as_str())
    {
        command.args(["--src-daemon-host", host]);
    }
    let destination = format!("oci:{}", scratch.path().join("layout").display());
    command.args([format!("docker-daemon:{image}"), destination.clone()]);
    let command_line = format!("{SKOPEO} copy docker-daemon:{image} {destination}");

    let started = Instant::now();
    let output = command.output().await.map_err(|e| AnalyzeError::Tool {
        command: command_line.clone(),
        problem: format!("{e} (install it with `apt-get install skopeo`)"),
    })?;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if !output.status.success() {
        return Err(AnalyzeError::Tool {
            command: command_line,
            problem: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    tracing::debug!(image, elapsed_ms, "skopeo copy finished");
    Ok(elapsed_ms)
}
