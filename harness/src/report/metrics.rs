//! The flat list of figures a report carries for the gate: one named metric
//! per measured number (`fleet.separated.debian.stored_bytes`), with its
//! kind, which decides the gate's threshold and whether higher is better.

use serde::{Deserialize, Serialize};

use super::StrategyResult;
use crate::run::Spread;

/// What a metric measures; each kind has its own gate thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Bytes of an image or a fleet (uncompressed, stored or transfer).
    ImageBytes,
    /// Layers of an image.
    LayerCount,
    /// Bytes an image ships that a later layer hides.
    WastedBytes,
    /// Wall time of a build, ms.
    BuildMs,
    /// Pipeline throughput, events/s.
    ThroughputEps,
    /// End-to-end latency, ms.
    LatencyMs,
}

impl MetricKind {
    /// Every kind, in the order tables list them.
    pub const ALL: [MetricKind; 6] = [
        MetricKind::ImageBytes,
        MetricKind::LayerCount,
        MetricKind::WastedBytes,
        MetricKind::BuildMs,
        MetricKind::ThroughputEps,
        MetricKind::LatencyMs,
    ];

    /// The kind's name, as `fleetbench.toml` spells it under `[gate]`.
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::ImageBytes => "image_bytes",
            MetricKind::LayerCount => "layer_count",
            MetricKind::WastedBytes => "wasted_bytes",
            MetricKind::BuildMs => "build_ms",
            MetricKind::ThroughputEps => "throughput_eps",
            MetricKind::LatencyMs => "latency_ms",
        }
    }

    /// Whether a larger value is an improvement (only throughput).
    pub fn higher_is_better(self) -> bool {
        self == MetricKind::ThroughputEps
    }

    /// Whether the value is a timing, noisy from run to run.
    pub fn is_timing(self) -> bool {
        matches!(
            self,
            MetricKind::BuildMs | MetricKind::ThroughputEps | MetricKind::LatencyMs
        )
    }
}

/// One measured figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Dotted name, unique within a report.
    pub name: String,
    /// What it measures.
    pub kind: MetricKind,
    /// Over the repeats (all equal for a figure measured once).
    pub value: Spread,
    /// Measurements the spread is made of.
    pub samples: usize,
}

/// The metrics of a bench's results, in a stable order.
pub fn collect(results: &[StrategyResult], repeat: usize) -> Vec<Metric> {
    let mut metrics = Vec::new();
    let mut exact = |name: String, kind, value: f64| {
        metrics.push(Metric {
            name,
            kind,
            value: Spread {
                min: value,
                median: value,
                max: value,
            },
            samples: 1,
        })
    };
    for r in results {
        let key = format!("{}.{}", r.strategy.name(), r.base.name());
        for image in &r.images {
            let prefix = format!("image.{key}.{}", image.name);
            exact(
                format!("{prefix}.size_bytes"),
                MetricKind::ImageBytes,
                image.size_bytes as f64,
            );
            exact(
                format!("{prefix}.layers"),
                MetricKind::LayerCount,
                image.layer_count as f64,
            );
            exact(
                format!("{prefix}.wasted_bytes"),
                MetricKind::WastedBytes,
                image.wasted_bytes as f64,
            );
        }
        let fleet = &r.fleet;
        for (field, bytes) in [
            ("naive_bytes", fleet.naive_bytes),
            ("stored_bytes", fleet.stored_bytes),
            ("transfer_gzip_bytes", fleet.transfer_gzip_bytes),
        ] {
            exact(
                format!("fleet.{key}.{field}"),
                MetricKind::ImageBytes,
                bytes as f64,
            );
        }
    }
    let mut timed = |name: String, kind, value: Spread, samples: usize| {
        metrics.push(Metric {
            name,
            kind,
            value,
            samples,
        })
    };
    for r in results {
        let key = format!("{}.{}", r.strategy.name(), r.base.name());
        for build in &r.builds {
            timed(
                format!("build.{key}.{}_ms", build.scenario.name()),
                MetricKind::BuildMs,
                build.images_ms,
                repeat,
            );
        }
        if let Some(run) = &r.runtime {
            timed(
                format!("run.{key}.throughput_eps"),
                MetricKind::ThroughputEps,
                run.throughput_eps,
                run.runs.len(),
            );
            for (field, spread) in [
                ("latency_p50_ms", run.latency_p50_ms),
                ("latency_p95_ms", run.latency_p95_ms),
                ("latency_p99_ms", run.latency_p99_ms),
            ] {
                timed(
                    format!("run.{key}.{field}"),
                    MetricKind::LatencyMs,
                    spread,
                    run.runs.len(),
                );
            }
        }
    }
    metrics
}
