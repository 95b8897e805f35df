//! `fleetbench gate`: compares a bench report with a committed baseline and
//! says, metric by metric, whether it regressed.
//!
//! Each metric kind has a threshold in `fleetbench.toml` under `[gate]`: a
//! largest change for the worse, in percent of the baseline, and optionally
//! an absolute limit (a maximum for costs, a minimum for throughput).
//! Timing metrics are compared on their medians, and the margin is never
//! tighter than the spread (max - min) the repeats showed, in the baseline
//! or now, nor than the kind's `min_margin`: a difference the machine's own
//! noise can make is not a regression. A metric the baseline has and the report lacks fails the
//! gate, so a measurement that silently stopped cannot pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::{self, BenchReport, Metric, MetricKind, ReportError};
use crate::run::Spread;

/// Errors of the gate itself (not regressions: those are verdicts).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A file could not be read or written, or is not a report.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Baseline and report were measured in ways that cannot be compared.
    #[error("baseline {baseline} and report {report} are not comparable: {problem}")]
    NotComparable {
        /// The baseline file.
        baseline: PathBuf,
        /// The report file.
        report: PathBuf,
        /// What differs.
        problem: String,
    },
}

/// The threshold of one metric kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Largest change for the worse, percent of the baseline's median.
    pub max_change_pct: f64,
    /// Absolute limit: the largest allowed value of a cost, the smallest of
    /// throughput.
    #[serde(default)]
    pub limit: Option<f64>,
    /// The smallest margin, in the metric's unit: a difference below it is
    /// within the clock's and the machine's noise and never a regression.
    #[serde(default)]
    pub min_margin: f64,
}

/// Thresholds by metric kind, as `[gate.<kind>]` tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Image and fleet bytes.
    pub image_bytes: Threshold,
    /// Layers per image.
    pub layer_count: Threshold,
    /// Wasted bytes per image.
    pub wasted_bytes: Threshold,
    /// Build wall time.
    pub build_ms: Threshold,
    /// Pipeline throughput.
    pub throughput_eps: Threshold,
    /// End-to-end latency.
    pub latency_ms: Threshold,
}

impl GateConfig {
    /// The threshold of `kind`.
    pub fn threshold(&self, kind: MetricKind) -> Threshold {
        match kind {
            MetricKind::ImageBytes => self.image_bytes,
            MetricKind::LayerCount => self.layer_count,
            MetricKind::WastedBytes => self.wasted_bytes,
            MetricKind::BuildMs => self.build_ms,
            MetricKind::ThroughputEps => self.throughput_eps,
            MetricKind::LatencyMs => self.latency_ms,
        }
    }
}

/// The committed reference a report is gated against: the metrics of one
/// bench, or of several merged, and how they were run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// The report layout's version.
    pub schema_version: u32,
    /// When the bench it comes from finished.
    pub created: String,
    /// The commit it measured.
    pub revision: String,
    /// `quick` or `full`, compile mode and cargo profile, as one line.
    pub measured_with: String,
    /// Its metrics.
    pub metrics: Vec<Metric>,
}

impl Baseline {
    /// The baseline of `report`.
    pub fn of(report: &BenchReport) -> Self {
        Self {
            schema_version: report.schema_version,
            created: report.created.clone(),
            revision: report.environment.revision.clone(),
            measured_with: measured_with(report),
            metrics: report.metrics.clone(),
        }
    }

    /// The baseline of several reports measured the same way, say quick
    /// benches of one repeat each: every metric's median is the median of
    /// the reports' medians, its min and max the lowest and highest value
    /// any of them saw, so the gate's margin is never tighter than the
    /// spread between the runs. Revision, time and the list of metrics are
    /// the newest report's (a metric only older reports have is left out).
    pub fn merged(reports: &[(PathBuf, Baseline)]) -> Result<Self, ReportError> {
        let Some((_, newest)) = reports.iter().max_by(|a, b| a.1.created.cmp(&b.1.created)) else {
            return Err(ReportError::Invalid {
                path: PathBuf::from("."),
                problem: "no report to make a baseline of".into(),
            });
        };
        let how = &newest.measured_with;
        if let Some((path, other)) = reports.iter().find(|(_, r)| &r.measured_with != how) {
            return Err(ReportError::Invalid {
                path: path.clone(),
                problem: format!(
                    "measured as \"{}\", the newest as \"{how}\": one baseline needs one way of measuring",
                    other.measured_with
                ),
            });
        }
        let mut merged = newest.clone();
        for metric in &mut merged.metrics {
            let seen: Vec<&Metric> = reports
                .iter()
                .filter_map(|(_, r)| r.metrics.iter().find(|m| m.name == metric.name))
                .collect();
            let medians: Vec<f64> = seen.iter().map(|m| m.value.median).collect();
            metric.value = Spread {
                min: seen
                    .iter()
                    .map(|m| m.value.min)
                    .fold(f64::INFINITY, f64::min),
                median: Spread::of(&medians).median,
                max: seen
                    .iter()
                    .map(|m| m.value.max)
                    .fold(f64::NEG_INFINITY, f64::max),
            };
            metric.samples = seen.iter().map(|m| m.samples).sum();
        }
        Ok(merged)
    }

    /// Reads a baseline file (a full report is accepted too).
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = report::read(path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ReportError::Invalid {
                path: path.to_path_buf(),
                problem: format!("not JSON: {e}"),
            })?;
        report::check_version(path, &value)?;
        if value.get("environment").is_some() {
            let full: BenchReport =
                serde_json::from_value(value).map_err(|e| ReportError::Invalid {
                    path: path.to_path_buf(),
                    problem: e.to_string(),
                })?;
            return Ok(Self::of(&full));
        }
        serde_json::from_value(value).map_err(|e| ReportError::Invalid {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })
    }

    /// Writes the baseline as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_string_pretty(self).expect("a baseline always serialises");
        report::write(path, &(text + "\n"))
    }
}

/// How a report was measured, as the baseline records it.
pub fn measured_with(report: &BenchReport) -> String {
    let s = &report.settings;
    format!(
        "{} bench, {} compile, profile {}",
        s.mode, s.compile_mode, s.profile
    )
}

/// What the gate says of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the threshold.
    Pass,
    /// Better than the baseline by more than the margin.
    Improved,
    /// Worse than the threshold or past the absolute limit.
    Regression,
    /// In the baseline but not measured now.
    Missing,
    /// Measured now but not in the baseline (passes; update the baseline).
    New,
}

impl Verdict {
    /// Whether this verdict fails the gate.
    pub fn fails(self) -> bool {
        matches!(self, Verdict::Regression | Verdict::Missing)
    }

    /// The verdict as tables show it.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Improved => "improved",
            Verdict::Regression => "REGRESSION",
            Verdict::Missing => "MISSING",
            Verdict::New => "new",
        }
    }
}

/// One metric compared.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The metric's name.
    pub name: String,
    /// Its kind.
    pub kind: MetricKind,
    /// The baseline's median.
    pub baseline: Option<f64>,
    /// The report's median.
    pub now: Option<f64>,
    /// Change of the median, percent of the baseline (+ is larger).
    pub change_pct: Option<f64>,
    /// The worst value still passing: baseline +/- the margin, and the
    /// absolute limit, whichever is tighter.
    pub allowed: Option<f64>,
    /// The margin used, in the metric's unit.
    pub margin: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct GateOutcome {
    /// Every metric, baseline order first, new ones after.
    pub comparisons: Vec<Comparison>,
    /// Metrics that fail the gate.
    pub failures: usize,
}

impl GateOutcome {
    /// Whether the gate passes.
    pub fn passed(&self) -> bool {
        self.failures == 0
    }
}

/// Compares `now` with `baseline` under `config`.
pub fn compare(baseline: &[Metric], now: &[Metric], config: &GateConfig) -> GateOutcome {
    let current: BTreeMap<&str, &Metric> = now.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut comparisons: Vec<Comparison> = baseline
        .iter()
        .map(|base| match current.get(base.name.as_str()) {
            Some(metric) => judge(base, metric, config.threshold(base.kind)),
            None => Comparison {
                name: base.name.clone(),
                kind: base.kind,
                baseline: Some(base.value.median),
                now: None,
                change_pct: None,
                allowed: None,
                margin: None,
                verdict: Verdict::Missing,
            },
        })
        .collect();
    let known: BTreeMap<&str, ()> = baseline.iter().map(|m| (m.name.as_str(), ())).collect();
    comparisons.extend(
        now.iter()
            .filter(|m| !known.contains_key(m.name.as_str()))
            .map(|m| Comparison {
                name: m.name.clone(),
                kind: m.kind,
                baseline: None,
                now: Some(m.value.median),
                change_pct: None,
                allowed: None,
                margin: None,
                verdict: Verdict::New,
            }),
    );
    let failures = comparisons.iter().filter(|c| c.verdict.fails()).count();
    GateOutcome {
        comparisons,
        failures,
    }
}

/// The verdict on one metric measured in both.
fn judge(base: &Metric, now: &Metric, threshold: Threshold) -> Comparison {
    let b = base.value.median;
    let n = now.value.median;
    let mut margin = (b.abs() * threshold.max_change_pct / 100.0).max(threshold.min_margin);
    if base.kind.is_timing() {
        margin = margin
            .max(base.value.max - base.value.min)
            .max(now.value.max - now.value.min);
    }
    let higher_is_better = base.kind.higher_is_better();
    let mut allowed = if higher_is_better {
        b - margin
    } else {
        b + margin
    };
    if let Some(limit) = threshold.limit {
        allowed = if higher_is_better {
            allowed.max(limit)
        } else {
            allowed.min(limit)
        };
    }
    let worse = if higher_is_better {
        n < allowed
    } else {
        n > allowed
    };
    let better = if higher_is_better {
        n > b + margin
    } else {
        n < b - margin
    };
    let verdict = if worse {
        Verdict::Regression
    } else if better && margin > 0.0 {
        Verdict::Improved
    } else {
        Verdict::Pass
    };
    Comparison {
        name: base.name.clone(),
        kind: base.kind,
        baseline: Some(b),
        now: Some(n),
        change_pct: (b != 0.0).then(|| (n - b) / b.abs() * 100.0),
        allowed: Some(allowed),
        margin: Some(margin),
        verdict,
    }
}

/// Checks that `baseline` and `report` were measured the same way.
pub fn check_comparable(
    baseline: &Baseline,
    report: &BenchReport,
    baseline_path: &Path,
    report_path: &Path,
) -> Result<(), GateError> {
    let now = measured_with(report);
    if baseline.measured_with != now {
        return Err(GateError::NotComparable {
            baseline: baseline_path.to_path_buf(),
            report: report_path.to_path_buf(),
            problem: format!(
                "the baseline is a {}, the report a {now}; rerun the bench the way the \
                 baseline was made, or update the baseline",
                baseline.measured_with
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, kind: MetricKind, min: f64, median: f64, max: f64) -> Metric {
        Metric {
            name: name.into(),
            kind,
            value: Spread { min, median, max },
            samples: 3,
        }
    }

    fn baseline(created: &str, how: &str, metrics: Vec<Metric>) -> (PathBuf, Baseline) {
        let baseline = Baseline {
            schema_version: 1,
            created: created.into(),
            revision: format!("rev-{created}"),
            measured_with: how.into(),
            metrics,
        };
        (PathBuf::from(format!("{created}/report.json")), baseline)
    }

    #[test]
    fn a_baseline_of_several_runs_takes_the_median_of_medians_and_the_widest_spread() {
        let quick = "quick bench, prebuilt compile, profile release";
        let runs = [
            baseline(
                "t1",
                quick,
                vec![metric(
                    "eps",
                    MetricKind::ThroughputEps,
                    240.0,
                    240.0,
                    240.0,
                )],
            ),
            baseline(
                "t3",
                quick,
                vec![metric(
                    "eps",
                    MetricKind::ThroughputEps,
                    360.0,
                    361.0,
                    362.0,
                )],
            ),
            baseline(
                "t2",
                quick,
                vec![metric(
                    "eps",
                    MetricKind::ThroughputEps,
                    199.0,
                    199.0,
                    199.0,
                )],
            ),
        ];
        let merged = Baseline::merged(&runs).expect("three runs measured alike merge");
        assert_eq!(
            merged.revision, "rev-t3",
            "the newest run names the baseline"
        );
        let eps = &merged.metrics[0];
        assert_eq!(
            (eps.value.min, eps.value.median, eps.value.max),
            (199.0, 240.0, 362.0)
        );
        assert_eq!(eps.samples, 9);
    }

    #[test]
    fn runs_measured_differently_do_not_make_one_baseline() {
        let runs = [
            baseline(
                "t1",
                "quick bench, prebuilt compile, profile release",
                vec![],
            ),
            baseline(
                "t2",
                "full bench, in-docker compile, profile release",
                vec![],
            ),
        ];
        let error = Baseline::merged(&runs).unwrap_err().to_string();
        assert!(error.contains("t1/report.json"), "{error}");
        assert!(Baseline::merged(&[]).is_err());
    }

    fn config() -> GateConfig {
        let t = |pct| Threshold {
            max_change_pct: pct,
            limit: None,
            min_margin: 0.0,
        };
        GateConfig {
            image_bytes: t(1.0),
            layer_count: t(0.0),
            wasted_bytes: t(10.0),
            build_ms: t(20.0),
            throughput_eps: t(20.0),
            latency_ms: t(20.0),
        }
    }

    fn verdict(base: Metric, now: Metric, config: &GateConfig) -> Verdict {
        compare(&[base], &[now], config).comparisons[0].verdict
    }

    #[test]
    fn an_image_two_percent_bigger_fails_a_one_percent_threshold() {
        let kind = MetricKind::ImageBytes;
        let base = metric("image.a", kind, 1000.0, 1000.0, 1000.0);
        let now = metric("image.a", kind, 1020.0, 1020.0, 1020.0);
        assert_eq!(verdict(base, now, &config()), Verdict::Regression);
    }

    #[test]
    fn an_unchanged_image_passes() {
        let kind = MetricKind::ImageBytes;
        let base = metric("image.a", kind, 1000.0, 1000.0, 1000.0);
        assert_eq!(verdict(base.clone(), base, &config()), Verdict::Pass);
    }

    #[test]
    fn one_more_layer_fails_a_zero_percent_threshold() {
        let kind = MetricKind::LayerCount;
        let base = metric("image.a.layers", kind, 4.0, 4.0, 4.0);
        let now = metric("image.a.layers", kind, 5.0, 5.0, 5.0);
        assert_eq!(verdict(base, now, &config()), Verdict::Regression);
    }

    #[test]
    fn a_throughput_drop_within_the_repeats_spread_is_not_a_regression() {
        let kind = MetricKind::ThroughputEps;
        // 20% of 1000 is 200, but the repeats spread over 500.
        let base = metric("run.x", kind, 700.0, 1000.0, 1200.0);
        let now = metric("run.x", kind, 650.0, 650.0, 650.0);
        assert_eq!(verdict(base, now, &config()), Verdict::Pass);
    }

    #[test]
    fn a_throughput_drop_beyond_threshold_and_spread_is_a_regression() {
        let kind = MetricKind::ThroughputEps;
        let base = metric("run.x", kind, 990.0, 1000.0, 1010.0);
        let now = metric("run.x", kind, 700.0, 700.0, 700.0);
        assert_eq!(verdict(base, now, &config()), Verdict::Regression);
    }

    #[test]
    fn faster_builds_are_reported_as_improved() {
        let kind = MetricKind::BuildMs;
        let base = metric("build.x", kind, 10_000.0, 10_000.0, 10_000.0);
        let now = metric("build.x", kind, 5_000.0, 5_000.0, 5_000.0);
        assert_eq!(verdict(base, now, &config()), Verdict::Improved);
    }

    #[test]
    fn a_slower_build_within_the_noise_floor_passes() {
        let mut config = config();
        config.build_ms.min_margin = 5_000.0;
        let kind = MetricKind::BuildMs;
        // Three times slower, but by 1.2 s only.
        let base = metric("build.x", kind, 600.0, 600.0, 600.0);
        let now = metric("build.x", kind, 1_800.0, 1_800.0, 1_800.0);
        assert_eq!(verdict(base, now, &config), Verdict::Pass);
    }

    #[test]
    fn an_absolute_limit_fails_even_within_the_relative_threshold() {
        let mut config = config();
        config.image_bytes.limit = Some(1005.0);
        let kind = MetricKind::ImageBytes;
        let base = metric("image.a", kind, 1000.0, 1000.0, 1000.0);
        let now = metric("image.a", kind, 1008.0, 1008.0, 1008.0);
        assert_eq!(verdict(base, now, &config), Verdict::Regression);
    }

    #[test]
    fn a_metric_that_disappeared_fails_and_a_new_one_passes() {
        let kind = MetricKind::ImageBytes;
        let outcome = compare(
            &[metric("old", kind, 1.0, 1.0, 1.0)],
            &[metric("new", kind, 1.0, 1.0, 1.0)],
            &config(),
        );
        let verdicts: Vec<_> = outcome.comparisons.iter().map(|c| c.verdict).collect();
        assert_eq!(verdicts, [Verdict::Missing, Verdict::New]);
        assert_eq!(outcome.failures, 1);
        assert!(!outcome.passed());
    }
}
