//! The SVG charts of a bench report: fleet size, build time, throughput and
//! latency, one file each, drawn with `plotters`.
//!
//! Every chart is a bar chart with one group of bars per strategy and base
//! (`separated/debian`), so each is first described as a `BarChart` (the
//! bars in data units) and then drawn by one renderer. Bars show medians;
//! whiskers show the min–max of the repeats. A chart whose figures the report
//! lacks (no runtime ran, no build was timed) is not drawn.
//!
//! Text is laid out by plotters' built-in estimate and written as SVG
//! `<text>` elements, so drawing needs no font files; the viewer's
//! `sans-serif` font renders it. The output depends only on the report: the
//! same report gives the same bytes.

use std::path::{Path, PathBuf};

use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{BenchReport, ReportError, StrategyResult};
use crate::build::Scenario;
use crate::run::Spread;

/// Width and height of a chart, pixels, before widening for many groups.
const BASE_SIZE: (u32, u32) = (720, 480);

/// Horizontal pixels each group of bars needs so that its label fits.
const GROUP_WIDTH_PX: u32 = 140;

/// Width of one group of bars on the x axis, in its own units (integer, so
/// that plotters labels the axis with the group names).
const GROUP_UNITS: i32 = 1000;

/// Units of a group's width left empty on each side of its bars.
const GROUP_PADDING: i32 = 120;

/// Widest a bar gets, in group units, so that a lone bar stays a bar.
const MAX_SLOT_UNITS: i32 = 300;

/// Share of a plot's height one legend entry takes, for the headroom above
/// the bars that keeps the legend clear of them.
const LEGEND_ENTRY_SHARE: f64 = 0.055;

const FONT: &str = "sans-serif";
const SHARED: RGBColor = RGBColor(0x4c, 0x72, 0xb0);
const UNIQUE: RGBColor = RGBColor(0xdd, 0x84, 0x52);
const NAIVE: RGBColor = RGBColor(0xb8, 0xb8, 0xb8);
const COLD: RGBColor = RGBColor(0x4c, 0x72, 0xb0);
const WARM: RGBColor = RGBColor(0x55, 0xa8, 0x68);
const CHANGE: RGBColor = RGBColor(0xc4, 0x4e, 0x52);
const P50: RGBColor = RGBColor(0x55, 0xa8, 0x68);
const P95: RGBColor = RGBColor(0xdd, 0x84, 0x52);
const P99: RGBColor = RGBColor(0xc4, 0x4e, 0x52);

/// Draws every chart of `report` into `dir`; returns the files written.
pub fn write_all(report: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let charts = [
        ("fleet-size.svg", fleet_size(report)),
        ("build-time.svg", build_time(report)),
        ("throughput.svg", throughput(report)),
        ("latency.svg", latency(report)),
    ];

    let mut written = Vec::new();
    for (file, chart) in charts {
        let path = dir.join(file);
        let Some(chart) = chart else {
            tracing::debug!(chart = file, "the report has no figures for it, not drawn");
            continue;
        };
        let svg = render(&chart).map_err(|e| ReportError::Chart {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        super::write(&path, &svg)?;
        written.push(path);
    }
    Ok(written)
}

/// A bar chart described in data units, ready to draw.
#[derive(Debug, Clone, PartialEq)]
struct BarChart {
    /// The caption above the plot.
    title: String,
    /// What the y axis counts, with its unit.
    y_label: String,
    /// One label per group of bars, left to right.
    groups: Vec<String>,
    /// Bars side by side within each group.
    slots: usize,
    /// The legend, top to bottom.
    legend: Vec<LegendEntry>,
    /// Every bar segment; stacked segments share a group and a slot.
    bars: Vec<Bar>,
}

/// One entry of a chart's legend.
#[derive(Debug, Clone, PartialEq)]
enum LegendEntry {
    /// A colour of bar, and what it counts.
    Fill(RGBColor, String),
    /// What the whiskers span.
    Whisker(String),
}

/// One bar segment, from `bottom` to `top`, in a group's slot.
#[derive(Debug, Clone, PartialEq)]
struct Bar {
    /// Index into the chart's groups.
    group: usize,
    /// Position within the group, from the left.
    slot: usize,
    /// Lower end, in the y axis' unit.
    bottom: f64,
    /// Upper end, in the y axis' unit.
    top: f64,
    /// Its colour.
    fill: RGBColor,
    /// The min and max drawn as a whisker over it, in the y axis' unit.
    whisker: Option<(f64, f64)>,
}

/// Stored bytes of each fleet split into shared and unique, beside its naive
/// size; absent for a report without results.
fn fleet_size(report: &BenchReport) -> Option<BarChart> {
    if report.results.is_empty() {
        return None;
    }

    let mb = |bytes: u64| bytes as f64 / 1e6;
    let mut bars = Vec::new();
    for (group, result) in report.results.iter().enumerate() {
        let fleet = &result.fleet;
        let shared = mb(fleet.shared_bytes);
        bars.push(bar(group, 0, 0.0, shared, SHARED));
        bars.push(bar(
            group,
            0,
            shared,
            shared + mb(fleet.unique_bytes),
            UNIQUE,
        ));
        bars.push(bar(group, 1, 0.0, mb(fleet.naive_bytes), NAIVE));
    }

    Some(BarChart {
        title: "Fleet size: stored once vs sum of the images".into(),
        y_label: "MB, uncompressed (1 MB = 10^6 bytes)".into(),
        groups: report.results.iter().map(group_label).collect(),
        slots: 2,
        legend: vec![
            LegendEntry::Fill(SHARED, "stored: layers shared by images".into()),
            LegendEntry::Fill(UNIQUE, "stored: layers of one image".into()),
            LegendEntry::Fill(NAIVE, "naive: sum of the image sizes".into()),
        ],
        bars,
    })
}

/// Build time of each scenario, the host compile stacked under the image
/// builds; absent when no build was timed.
fn build_time(report: &BenchReport) -> Option<BarChart> {
    let scenarios: Vec<Scenario> = [Scenario::Cold, Scenario::Warm, Scenario::Change]
        .into_iter()
        .filter(|s| {
            report
                .results
                .iter()
                .any(|r| r.builds.iter().any(|b| b.scenario == *s))
        })
        .collect();
    if scenarios.is_empty() {
        return None;
    }
    let with_compile = report
        .results
        .iter()
        .flat_map(|r| &r.builds)
        .any(|b| b.host_compile_ms.median > 0.0);

    let y_label = if with_compile {
        "wall time, s (host compile + image builds, median)"
    } else {
        "wall time of the image builds, s (median)"
    };
    Some(BarChart {
        title: "Build time per scenario".into(),
        y_label: y_label.into(),
        groups: report.results.iter().map(group_label).collect(),
        slots: scenarios.len(),
        legend: build_legend(&scenarios, with_compile),
        bars: build_bars(report, &scenarios),
    })
}

/// The bars of the build chart in seconds: per build the host compile (when
/// there was one) and the image builds above it, whiskered by their range.
fn build_bars(report: &BenchReport, scenarios: &[Scenario]) -> Vec<Bar> {
    let seconds = |ms: f64| ms / 1000.0;
    let mut bars = Vec::new();
    for (group, result) in report.results.iter().enumerate() {
        for build in &result.builds {
            let slot = scenarios.iter().position(|s| *s == build.scenario);
            let slot = slot.expect("every scenario built is in the list");
            let fill = scenario_colour(build.scenario);
            let compile = seconds(build.host_compile_ms.median);
            if compile > 0.0 {
                bars.push(bar(group, slot, 0.0, compile, lighter(fill)));
            }

            let images = build.images_ms;
            let top = compile + seconds(images.median);
            bars.push(Bar {
                whisker: Some((compile + seconds(images.min), compile + seconds(images.max))),
                ..bar(group, slot, compile, top, fill)
            });
        }
    }
    bars
}

/// The build chart's legend: per scenario its image builds and, when any
/// build had one, its host compile; then the whiskers.
fn build_legend(scenarios: &[Scenario], with_compile: bool) -> Vec<LegendEntry> {
    let mut legend = Vec::new();
    for scenario in scenarios {
        let fill = scenario_colour(*scenario);
        let name = scenario.name();
        legend.push(LegendEntry::Fill(fill, format!("{name}: image builds")));
        if with_compile {
            legend.push(LegendEntry::Fill(
                lighter(fill),
                format!("{name}: host compile"),
            ));
        }
    }
    legend.push(LegendEntry::Whisker("min–max of the image builds".into()));
    legend
}

/// Pipeline throughput of each strategy and base; absent when the runtime
/// did not run.
fn throughput(report: &BenchReport) -> Option<BarChart> {
    let measured = with_runtime(report);
    if measured.is_empty() {
        return None;
    }

    let bars = measured
        .iter()
        .enumerate()
        .map(|(group, (_, run))| spread_bar(group, 0, run.throughput_eps, SHARED))
        .collect();

    Some(BarChart {
        title: "Pipeline throughput".into(),
        y_label: "events/s (median of the runs)".into(),
        groups: measured.iter().map(|(r, _)| group_label(r)).collect(),
        slots: 1,
        legend: vec![
            LegendEntry::Fill(SHARED, "throughput, median".into()),
            LegendEntry::Whisker("min–max of the runs".into()),
        ],
        bars,
    })
}

/// End-to-end latency percentiles of each strategy and base; absent when
/// the runtime did not run.
fn latency(report: &BenchReport) -> Option<BarChart> {
    let measured = with_runtime(report);
    if measured.is_empty() {
        return None;
    }

    let mut bars = Vec::new();
    for (group, (_, run)) in measured.iter().enumerate() {
        bars.push(spread_bar(group, 0, run.latency_p50_ms, P50));
        bars.push(spread_bar(group, 1, run.latency_p95_ms, P95));
        bars.push(spread_bar(group, 2, run.latency_p99_ms, P99));
    }

    Some(BarChart {
        title: "End-to-end latency".into(),
        y_label: "ms (median of the runs)".into(),
        groups: measured.iter().map(|(r, _)| group_label(r)).collect(),
        slots: 3,
        legend: vec![
            LegendEntry::Fill(P50, "p50".into()),
            LegendEntry::Fill(P95, "p95".into()),
            LegendEntry::Fill(P99, "p99".into()),
            LegendEntry::Whisker("min–max of the runs".into()),
        ],
        bars,
    })
}

/// The results that have runtime figures, with them.
fn with_runtime(report: &BenchReport) -> Vec<(&StrategyResult, &crate::run::StrategyRuns)> {
    report
        .results
        .iter()
        .filter_map(|r| r.runtime.as_ref().map(|run| (r, run)))
        .collect()
}

/// The label of a result's group of bars, `strategy/base`.
fn group_label(result: &StrategyResult) -> String {
    format!("{}/{}", result.strategy.name(), result.base.name())
}

/// A bar from `bottom` to `top` without a whisker.
fn bar(group: usize, slot: usize, bottom: f64, top: f64, fill: RGBColor) -> Bar {
    Bar {
        group,
        slot,
        bottom,
        top,
        fill,
        whisker: None,
    }
}

/// A bar up to a spread's median with a whisker over its min and max.
fn spread_bar(group: usize, slot: usize, spread: Spread, fill: RGBColor) -> Bar {
    Bar {
        whisker: Some((spread.min, spread.max)),
        ..bar(group, slot, 0.0, spread.median, fill)
    }
}

/// The colour of a scenario's bars.
fn scenario_colour(scenario: Scenario) -> RGBColor {
    match scenario {
        Scenario::Cold => COLD,
        Scenario::Warm => WARM,
        Scenario::Change => CHANGE,
    }
}

/// `colour` halfway to white, for the lower part of a stacked bar.
fn lighter(colour: RGBColor) -> RGBColor {
    let half = |c: u8| c + (255 - c) / 2;
    RGBColor(half(colour.0), half(colour.1), half(colour.2))
}

/// Draws `chart` as an SVG document.
fn render(chart: &BarChart) -> Result<String, DrawingAreaErrorKind<std::io::Error>> {
    let groups = u32::try_from(chart.groups.len()).unwrap_or(u32::MAX);
    let width = BASE_SIZE
        .0
        .max(180u32.saturating_add(groups.saturating_mul(GROUP_WIDTH_PX)));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, BASE_SIZE.1)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root, chart)?;
        root.present()?;
    }
    Ok(svg)
}

/// Draws the axes, bars, whiskers and legend of `chart` onto `root`.
fn draw(root: &DrawingArea<SVGBackend<'_>, Shift>, chart: &BarChart) -> DrawResult {
    let group_count = chart.groups.len();
    let groups = i32::try_from(group_count).unwrap_or(i32::MAX / GROUP_UNITS);
    let centres = (0..groups)
        .map(|g| g * GROUP_UNITS + GROUP_UNITS / 2)
        .collect();
    let x_range = (0..groups * GROUP_UNITS).with_key_points(centres);
    let y_max = y_max(chart);

    let mut plot = ChartBuilder::on(root)
        .caption(&chart.title, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range, 0.0..y_max)?;

    let x_label = |x: &i32| group_at(&chart.groups, *x);
    let y_label = |y: &f64| tick(*y, y_max);
    plot.configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(group_count)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .x_desc("strategy/base")
        .y_desc(&chart.y_label)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()?;

    draw_bars(&mut plot, chart)?;
    draw_legend(&mut plot, chart)
}

/// Draws the bars of `chart`, side by side in their groups, and their
/// whiskers.
fn draw_bars(plot: &mut Plot<'_, '_>, chart: &BarChart) -> DrawResult {
    let slots = i32::try_from(chart.slots.max(1)).unwrap_or(1);
    let slot_width = ((GROUP_UNITS - 2 * GROUP_PADDING) / slots).min(MAX_SLOT_UNITS);
    let indent = (GROUP_UNITS - slots * slot_width) / 2;
    let gap = slot_width / 16;
    let left = |b: &Bar| {
        let (group, slot) = (b.group as i32, b.slot as i32);
        group * GROUP_UNITS + indent + slot * slot_width
    };
    plot.draw_series(chart.bars.iter().map(|b| {
        let x = left(b);
        let corners = [(x + gap, b.bottom), (x + slot_width - gap, b.top)];
        Rectangle::new(corners, b.fill.filled())
    }))?;
    plot.draw_series(chart.bars.iter().filter_map(|b| {
        let (min, max) = b.whisker?;
        Some(whisker(left(b) + slot_width / 2, slot_width / 8, min, max))
    }))?;
    Ok(())
}

/// Draws the legend of `chart` in the headroom at the plot's upper right.
fn draw_legend<'a, 'b: 'a>(plot: &mut Plot<'a, 'b>, chart: &BarChart) -> DrawResult {
    for entry in &chart.legend {
        add_legend_entry(plot, entry)?;
    }
    plot.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// What drawing onto a chart's SVG gives.
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// A chart's plotting area: groups on an integer x axis, values on y.
type Plot<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<WithKeyPoints<RangedCoordi32>, RangedCoordf64>>;

/// A whisker from `min` to `max` at `x`, its caps `cap` units either side;
/// one path traced top cap, stem, bottom cap.
fn whisker(x: i32, cap: i32, min: f64, max: f64) -> PathElement<(i32, f64)> {
    let points = [(x - cap, max), (x + cap, max), (x, max), (x, min)];
    let points = points.into_iter().chain([(x - cap, min), (x + cap, min)]);
    PathElement::new(points.collect::<Vec<_>>(), BLACK.stroke_width(1))
}

/// Adds one legend entry as an empty series carrying only its label.
fn add_legend_entry(plot: &mut Plot<'_, '_>, entry: &LegendEntry) -> DrawResult {
    let series = plot.draw_series(std::iter::empty::<Rectangle<(i32, f64)>>())?;
    match entry {
        LegendEntry::Fill(fill, label) => {
            let fill = *fill;
            series
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], fill.filled()));
        }
        LegendEntry::Whisker(label) => {
            // One path tracing the shape of a whisker: top cap, stem, bottom cap.
            series.label(label).legend(|(x, y)| {
                let (top, bottom) = (y - 6, y + 6);
                let (left, mid, right) = (x + 3, x + 7, x + 11);
                let points = [(left, top), (right, top), (mid, top), (mid, bottom)];
                let points = points.into_iter().chain([(left, bottom), (right, bottom)]);
                PathElement::new(points.collect::<Vec<_>>(), BLACK.stroke_width(1))
            });
        }
    }
    Ok(())
}

/// The top of the y axis: the highest bar or whisker, with headroom above
/// it for the legend.
fn y_max(chart: &BarChart) -> f64 {
    let highest = chart
        .bars
        .iter()
        .map(|b| b.whisker.map_or(b.top, |(_, max)| max.max(b.top)))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let free = 1.0 - 0.08 - LEGEND_ENTRY_SHARE * chart.legend.len() as f64;
    if highest > 0.0 {
        highest / free.max(0.3)
    } else {
        1.0
    }
}

/// The label of the group whose centre is at `x`, empty elsewhere.
fn group_at(groups: &[String], x: i32) -> String {
    if x < 0 || x % GROUP_UNITS != GROUP_UNITS / 2 {
        return String::new();
    }
    let index = (x / GROUP_UNITS) as usize;
    groups.get(index).cloned().unwrap_or_default()
}

/// A y tick's label, with as many decimals as an axis up to `y_max` needs.
fn tick(y: f64, y_max: f64) -> String {
    let decimals = if y_max >= 20.0 {
        0
    } else if y_max >= 2.0 {
        1
    } else {
        2
    };
    format!("{y:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BenchSettings, Environment, FleetSizes, ScenarioBuild, SCHEMA_VERSION};
    use crate::run::StrategyRuns;
    use crate::strategy::{Base, Strategy};

    fn spread(min: f64, median: f64, max: f64) -> Spread {
        Spread { min, median, max }
    }

    fn fleet(naive_mb: u64, shared_mb: u64, unique_mb: u64) -> FleetSizes {
        FleetSizes {
            image_count: 9,
            naive_bytes: naive_mb * 1_000_000,
            stored_bytes: (shared_mb + unique_mb) * 1_000_000,
            transfer_gzip_bytes: shared_mb * 400_000,
            transfer_zstd_bytes: shared_mb * 350_000,
            distinct_layers: 12,
            duplicate_bytes: 0,
            shared_bytes: shared_mb * 1_000_000,
            unique_bytes: unique_mb * 1_000_000,
            pull_after_change_gzip_bytes: Some(3_000_000),
        }
    }

    fn builds(cold_ms: f64) -> Vec<ScenarioBuild> {
        [
            (Scenario::Cold, cold_ms),
            (Scenario::Warm, 2_000.0),
            (Scenario::Change, 9_000.0),
        ]
        .into_iter()
        .map(|(scenario, ms)| ScenarioBuild {
            scenario,
            images_ms: spread(ms * 0.9, ms, ms * 1.2),
            host_compile_ms: spread(30_000.0, 31_000.0, 33_000.0),
            cached_steps: 4,
            total_steps: 10,
            redeployed: vec!["kpi-worker".into()],
        })
        .collect()
    }

    fn runtime(eps: f64) -> StrategyRuns {
        StrategyRuns {
            strategy: Strategy::Separated,
            base: Base::Debian,
            runs: Vec::new(),
            throughput_eps: spread(eps * 0.95, eps, eps * 1.03),
            ceiling_ratio: spread(0.4, 0.5, 0.6),
            latency_p50_ms: spread(10.0, 12.0, 15.0),
            latency_p95_ms: spread(40.0, 45.0, 52.0),
            latency_p99_ms: spread(80.0, 95.0, 120.0),
            startup_max_ms: spread(300.0, 320.0, 350.0),
            memory_total_bytes: spread(9e7, 1e8, 1.1e8),
            cpu_total_seconds: spread(4.0, 4.5, 5.0),
            verified: true,
        }
    }

    fn report() -> BenchReport {
        let result = |strategy, fleet, cold_ms, eps| StrategyResult {
            strategy,
            base: Base::Debian,
            images: Vec::new(),
            fleet,
            builds: builds(cold_ms),
            runtime: Some(runtime(eps)),
        };
        BenchReport {
            schema_version: SCHEMA_VERSION,
            created: "2026-01-01T00:00:00Z".into(),
            environment: Environment::default(),
            settings: BenchSettings {
                mode: "quick".into(),
                compile_mode: "prebuilt".into(),
                profile: "release".into(),
                repeat: 3,
                change_worker: "kpi-worker".into(),
                strategies: vec![Strategy::Separated, Strategy::Unified],
                bases: vec![Base::Debian],
                runtime: true,
            },
            results: vec![
                result(Strategy::Separated, fleet(900, 80, 120), 95_000.0, 4_200.0),
                result(Strategy::Unified, fleet(1_100, 0, 130), 60_000.0, 4_500.0),
            ],
            ceiling: None,
            identical_across_strategies: Some(true),
            metrics: Vec::new(),
            not_working: Vec::new(),
        }
    }

    fn without_runtime() -> BenchReport {
        let mut report = report();
        report.settings.runtime = false;
        for result in &mut report.results {
            result.runtime = None;
        }
        report
    }

    fn file_names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_full_report_draws_all_four_charts() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(&report(), dir.path()).unwrap();

        assert_eq!(
            file_names(&written),
            [
                "fleet-size.svg",
                "build-time.svg",
                "throughput.svg",
                "latency.svg"
            ]
        );
        for path in &written {
            assert!(path.is_file(), "{} was not written", path.display());
        }
    }

    #[test]
    fn every_chart_is_an_svg_naming_every_strategy() {
        let dir = tempfile::tempdir().unwrap();
        for path in write_all(&report(), dir.path()).unwrap() {
            let svg = std::fs::read_to_string(&path).unwrap();
            let name = path.display();

            assert!(
                svg.starts_with("<svg") || svg.starts_with("<?xml"),
                "{name}"
            );
            assert!(svg.trim_end().ends_with("</svg>"), "{name} is not closed");
            assert!(svg.contains("<text"), "{name} has no text");
            for label in ["separated/debian", "unified/debian"] {
                assert!(svg.contains(label), "{name} does not name {label}");
            }
        }
    }

    #[test]
    fn drawing_the_same_report_twice_gives_identical_bytes() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let report = report();

        let written = write_all(&report, first.path()).unwrap();
        write_all(&report, second.path()).unwrap();

        for path in written {
            let again = second.path().join(path.file_name().unwrap());
            assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(again).unwrap());
        }
    }

    #[test]
    fn a_report_without_runtime_figures_draws_no_throughput_or_latency_chart() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(&without_runtime(), dir.path()).unwrap();

        assert_eq!(file_names(&written), ["fleet-size.svg", "build-time.svg"]);
        assert!(!dir.path().join("throughput.svg").exists());
        assert!(!dir.path().join("latency.svg").exists());
    }

    #[test]
    fn a_report_without_results_draws_no_chart() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = without_runtime();
        report.results.clear();

        assert!(write_all(&report, dir.path()).unwrap().is_empty());
    }

    #[test]
    fn the_fleet_size_chart_stacks_shared_under_unique_beside_the_naive_size() {
        let chart = fleet_size(&report()).unwrap();
        let separated: Vec<_> = chart.bars.iter().filter(|b| b.group == 0).collect();

        assert_eq!(separated.len(), 3);
        assert_eq!((separated[0].bottom, separated[0].top), (0.0, 80.0));
        assert_eq!((separated[1].bottom, separated[1].top), (80.0, 200.0));
        assert_eq!((separated[2].slot, separated[2].top), (1, 900.0));
    }

    #[test]
    fn build_bars_stack_the_image_builds_on_the_host_compile_in_seconds() {
        let chart = build_time(&report()).unwrap();
        let cold: Vec<_> = chart
            .bars
            .iter()
            .filter(|b| b.group == 0 && b.slot == 0)
            .collect();

        assert_eq!(chart.slots, 3);
        assert_eq!((cold[0].bottom, cold[0].top), (0.0, 31.0));
        assert_eq!((cold[1].bottom, cold[1].top), (31.0, 126.0));
        assert_eq!(cold[1].whisker, Some((31.0 + 85.5, 31.0 + 114.0)));
    }

    #[test]
    fn a_build_chart_without_host_compile_counts_only_the_image_builds() {
        let mut report = report();
        for build in report.results.iter_mut().flat_map(|r| &mut r.builds) {
            build.host_compile_ms = spread(0.0, 0.0, 0.0);
        }
        let chart = build_time(&report).unwrap();

        assert_eq!(chart.bars.len(), 6);
        assert!(chart.y_label.starts_with("wall time of the image builds"));
    }

    #[test]
    fn latency_bars_show_each_percentiles_median_with_its_range() {
        let chart = latency(&report()).unwrap();
        let p99 = chart
            .bars
            .iter()
            .find(|b| b.group == 1 && b.slot == 2)
            .unwrap();

        assert_eq!(p99.top, 95.0);
        assert_eq!(p99.whisker, Some((80.0, 120.0)));
    }

    #[test]
    fn x_labels_fall_only_on_group_centres() {
        let groups = vec!["a/debian".to_string(), "b/debian".to_string()];

        assert_eq!(group_at(&groups, 500), "a/debian");
        assert_eq!(group_at(&groups, 1_500), "b/debian");
        assert_eq!(group_at(&groups, 1_000), "");
        assert_eq!(group_at(&groups, 2_500), "");
    }
}
