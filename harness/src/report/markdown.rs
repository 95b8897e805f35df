//! `report.md`: the bench as an architecture decision record. Context (the
//! question and the claim that prompted it), the options (the strategies),
//! the measured tables, the decision drivers with the strategy that wins
//! each, and the claim set against the measured sizes. Every figure comes
//! from the report; nothing here is written by hand.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::{BenchReport, StrategyResult};
use crate::build::Scenario;
use crate::run::Spread;
use crate::units::{format_bytes, format_duration_ms};

/// The claim the tool puts to the test: nine per-worker images of about
/// 1 GB against one unified image of about 1 GB.
pub const CLAIM: &str = "nine per-worker images of about 1 GB each (\"9 GB\", 45 min to build) \
against one unified image (\"1 GB\", 15 min): -88%";

/// Renders the decision record; `charts` are the SVG files beside it.
pub fn render(report: &BenchReport, charts: &[PathBuf]) -> String {
    let mut md = String::new();
    header(&mut md, report);
    options(&mut md, report);
    sizes(&mut md, report);
    builds(&mut md, report);
    runtime(&mut md, report);
    charts_section(&mut md, charts);
    drivers(&mut md, report);
    claim(&mut md, report);
    limits(&mut md, report);
    md
}

fn header(md: &mut String, report: &BenchReport) {
    let env = &report.environment;
    let s = &report.settings;
    let _ = writeln!(
        md,
        "# ADR: one image for all workers, or one image per worker?\n"
    );
    let _ = writeln!(
        md,
        "Measured by `fleetbench bench --{}` on {}.\n",
        s.mode, report.created
    );
    let _ = writeln!(md, "## Context\n");
    let _ = writeln!(
        md,
        "A fleet of nine stream-processing workers (an AIOps pipeline on Kafka \
         and PostgreSQL) has to be packaged into container images. A claim from \
         a Python fleet is often quoted: {CLAIM}. It ignores layer sharing, \
         compression, the rebuild after a one-line change and runtime effects. \
         This record measures them for the same nine Rust workers, packaged \
         several ways, on one machine in one run.\n"
    );
    let _ = writeln!(md, "| environment | |\n|---|---|");
    let dirty = if env.dirty {
        " (with uncommitted changes)"
    } else {
        ""
    };
    let rows = [
        ("revision", format!("`{}`{dirty}", env.revision)),
        (
            "machine",
            format!(
                "{} cores, {}, {} {}",
                env.cpus,
                format_bytes(env.memory_bytes),
                env.os,
                env.arch
            ),
        ),
        (
            "Docker Engine",
            format!(
                "{} (API {}) at {}",
                env.docker_version, env.docker_api_version, env.docker_endpoint
            ),
        ),
        ("host toolchain", env.rustc.clone()),
        (
            "compile",
            format!(
                "{}, cargo profile `{}`, change scenario edits `{}`",
                s.compile_mode, s.profile, s.change_worker
            ),
        ),
        ("repeats", s.repeat.to_string()),
    ];
    for (name, value) in rows {
        let _ = writeln!(md, "| {name} | {value} |");
    }
    for image in &env.images {
        let _ = writeln!(
            md,
            "| {} image | `{}` ({}), `{}` |",
            image.role, image.reference, image.source, image.id
        );
    }
    md.push('\n');
}

fn options(md: &mut String, report: &BenchReport) {
    let _ = writeln!(md, "## Options\n");
    let _ = writeln!(md, "| strategy | images | idea |\n|---|---|---|");
    for &strategy in &report.settings.strategies {
        let count = crate::strategy::images(strategy).len();
        let idea = match strategy {
            crate::strategy::Strategy::Separated => {
                "one self-contained Dockerfile per worker, each compiling its own worker"
            }
            crate::strategy::Strategy::Unified => {
                "one image holding all nine binaries; the command picks the worker"
            }
            crate::strategy::Strategy::Specialized => {
                "ingestor, KPI and anomaly detector on images of their own, the rest unified"
            }
            crate::strategy::Strategy::Layered => {
                "one multi-stage Dockerfile: shared builder and base, a thin stage per worker"
            }
            crate::strategy::Strategy::Multicall => "one binary that runs any of the nine workers",
        };
        let _ = writeln!(md, "| {} | {count} | {idea} |", strategy.name());
    }
    let bases: Vec<&str> = report.settings.bases.iter().map(|b| b.name()).collect();
    let _ = writeln!(
        md,
        "\nEach on the runtime base(s): {} (`debian`: Debian slim with dynamically \
         linked binaries; `scratch`: an empty image with static binaries).\n",
        bases.join(", ")
    );
}

fn sizes(md: &mut String, report: &BenchReport) {
    let _ = writeln!(md, "## Measured: sizes\n");
    let _ = writeln!(
        md,
        "Naive: the images' sizes added up (what the claim counts). Stored: each \
         distinct layer once, what a node running the whole fleet or a registry \
         holds. Transfer: the distinct layers compressed, what a fresh node pulls. \
         Pull after change: gzip bytes a node that runs the fleet pulls after the \
         one-line change.\n"
    );
    let _ = writeln!(
        md,
        "| strategy | base | images | naive | stored | transfer gzip | transfer zstd | \
         shared | unique | wasted | duplicate | pull after change |"
    );
    let _ = writeln!(md, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in &report.results {
        let f = &r.fleet;
        let wasted: u64 = r.images.iter().map(|i| i.wasted_bytes).sum();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.strategy.name(),
            r.base.name(),
            f.image_count,
            format_bytes(f.naive_bytes),
            format_bytes(f.stored_bytes),
            format_bytes(f.transfer_gzip_bytes),
            format_bytes(f.transfer_zstd_bytes),
            format_bytes(f.shared_bytes),
            format_bytes(f.unique_bytes),
            format_bytes(wasted),
            format_bytes(f.duplicate_bytes),
            f.pull_after_change_gzip_bytes
                .map_or("-".into(), format_bytes),
        );
    }
    md.push('\n');
}

fn spread_ms(s: &Spread) -> String {
    if s.min == s.max {
        format_duration_ms(s.median as u64)
    } else {
        format!(
            "{} ({}-{})",
            format_duration_ms(s.median as u64),
            format_duration_ms(s.min as u64),
            format_duration_ms(s.max as u64)
        )
    }
}

fn spread_num(s: &Spread, digits: usize) -> String {
    if s.min == s.max {
        format!("{:.*}", digits, s.median)
    } else {
        format!(
            "{:.*} ({:.*}-{:.*})",
            digits, s.median, digits, s.min, digits, s.max
        )
    }
}

fn builds(md: &mut String, report: &BenchReport) {
    if report.results.iter().all(|r| r.builds.is_empty()) {
        return;
    }
    let _ = writeln!(md, "## Measured: builds\n");
    let _ = writeln!(
        md,
        "Wall time of the strategy's image builds, median (min-max) of the repeats. \
         Cold: no build cache, base images present. Warm: nothing changed. Change: \
         one line of `{}` changed. The host compile of the prebuilt mode is listed \
         apart: it is shared by every strategy of a base.\n",
        report.settings.change_worker
    );
    let _ = writeln!(
        md,
        "| strategy | base | scenario | image builds | host compile | cached steps | redeployed |"
    );
    let _ = writeln!(md, "|---|---|---|--:|--:|--:|---|");
    for r in &report.results {
        for b in &r.builds {
            let redeployed = if b.scenario == Scenario::Change {
                format!("{}: {}", b.redeployed.len(), b.redeployed.join(", "))
            } else {
                "-".into()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {}/{} | {} |",
                r.strategy.name(),
                r.base.name(),
                b.scenario.name(),
                spread_ms(&b.images_ms),
                spread_ms(&b.host_compile_ms),
                b.cached_steps,
                b.total_steps,
                redeployed
            );
        }
    }
    md.push('\n');
}

fn runtime(md: &mut String, report: &BenchReport) {
    if report.results.iter().all(|r| r.runtime.is_none()) {
        return;
    }
    let _ = writeln!(md, "## Measured: runtime\n");
    if let Some(c) = &report.ceiling {
        let _ = writeln!(
            md,
            "Ceiling in the same run: the broker moves {:.0} messages/s with rdkafka \
             alone, PostgreSQL inserts {:.0} rows/s in batches; the pipeline's \
             throughput is given as a share of the lower.\n",
            c.broker_eps, c.postgres_rows_per_s
        );
    }
    let _ = writeln!(
        md,
        "| strategy | base | runs | events/s | of ceiling | p50 ms | p95 ms | p99 ms | \
         slowest startup | memory (9 workers) | CPU s | verified |"
    );
    let _ = writeln!(md, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
    for r in &report.results {
        let Some(run) = &r.runtime else { continue };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.strategy.name(),
            r.base.name(),
            run.runs.len(),
            spread_num(&run.throughput_eps, 0),
            spread_num(&run.ceiling_ratio, 2),
            spread_num(&run.latency_p50_ms, 0),
            spread_num(&run.latency_p95_ms, 0),
            spread_num(&run.latency_p99_ms, 0),
            spread_ms(&run.startup_max_ms),
            format_bytes(run.memory_total_bytes.median as u64),
            spread_num(&run.cpu_total_seconds, 1),
            if run.verified { "yes" } else { "**NO**" }
        );
    }
    if let Some(identical) = report.identical_across_strategies {
        let _ = writeln!(
            md,
            "\nResult tables identical across every strategy and base: {}.",
            if identical { "yes" } else { "**no**" }
        );
    }
    md.push('\n');
}

fn charts_section(md: &mut String, charts: &[PathBuf]) {
    if charts.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Charts\n");
    for chart in charts {
        if let Some(name) = chart.file_name().and_then(|n| n.to_str()) {
            let title = name.trim_end_matches(".svg").replace('-', " ");
            let _ = writeln!(md, "![{title}]({name})\n");
        }
    }
}

/// One decision driver: a name, how to read a result's figure, and whether
/// lower wins.
struct Driver {
    name: &'static str,
    figure: fn(&StrategyResult) -> Option<f64>,
    lower_wins: bool,
    show: fn(f64) -> String,
}

fn scenario_ms(r: &StrategyResult, scenario: Scenario) -> Option<f64> {
    r.builds
        .iter()
        .find(|b| b.scenario == scenario)
        .map(|b| b.images_ms.median + b.host_compile_ms.median)
}

fn bytes(value: f64) -> String {
    format_bytes(value as u64)
}

fn millis(value: f64) -> String {
    format_duration_ms(value as u64)
}

const DRIVERS: &[Driver] = &[
    Driver {
        name: "node disk (stored size)",
        figure: |r| Some(r.fleet.stored_bytes as f64),
        lower_wins: true,
        show: bytes,
    },
    Driver {
        name: "fresh node pull (transfer, gzip)",
        figure: |r| Some(r.fleet.transfer_gzip_bytes as f64),
        lower_wins: true,
        show: bytes,
    },
    Driver {
        name: "pull after a one-line change",
        figure: |r| r.fleet.pull_after_change_gzip_bytes.map(|b| b as f64),
        lower_wins: true,
        show: bytes,
    },
    Driver {
        name: "images redeployed after a one-line change",
        figure: |r| {
            r.builds
                .iter()
                .find(|b| b.scenario == Scenario::Change)
                .map(|b| b.redeployed.len() as f64)
        },
        lower_wins: true,
        show: |v| format!("{v:.0}"),
    },
    Driver {
        name: "cold build (images + host compile)",
        figure: |r| scenario_ms(r, Scenario::Cold),
        lower_wins: true,
        show: millis,
    },
    Driver {
        name: "rebuild after a one-line change",
        figure: |r| scenario_ms(r, Scenario::Change),
        lower_wins: true,
        show: millis,
    },
    Driver {
        name: "throughput",
        figure: |r| r.runtime.as_ref().map(|x| x.throughput_eps.median),
        lower_wins: false,
        show: |v| format!("{v:.0} events/s"),
    },
    Driver {
        name: "latency p95",
        figure: |r| r.runtime.as_ref().map(|x| x.latency_p95_ms.median),
        lower_wins: true,
        show: |v| format!("{v:.0} ms"),
    },
    Driver {
        name: "memory of the nine workers",
        figure: |r| r.runtime.as_ref().map(|x| x.memory_total_bytes.median),
        lower_wins: true,
        show: bytes,
    },
];

fn drivers(md: &mut String, report: &BenchReport) {
    let _ = writeln!(md, "## Decision drivers\n");
    let _ = writeln!(
        md,
        "For each driver, the strategy and base that measured best and the runner-up. \
         Timings are medians; where the runner-up is within the winner's own \
         min-max spread, the two are not told apart by this run.\n"
    );
    let _ = writeln!(md, "| driver | best | runner-up |\n|---|---|---|");
    let mut wins: Vec<(String, usize)> = Vec::new();
    for driver in DRIVERS {
        let mut ranked: Vec<(&StrategyResult, f64)> = report
            .results
            .iter()
            .filter_map(|r| (driver.figure)(r).map(|v| (r, v)))
            .collect();
        if ranked.is_empty() {
            continue;
        }
        ranked.sort_by(|a, b| {
            let order = a.1.total_cmp(&b.1);
            if driver.lower_wins {
                order
            } else {
                order.reverse()
            }
        });
        let label = |(r, v): &(&StrategyResult, f64)| {
            format!(
                "{}/{}: {}",
                r.strategy.name(),
                r.base.name(),
                (driver.show)(*v)
            )
        };
        let best = label(&ranked[0]);
        let second = ranked.get(1).map_or("-".into(), label);
        let winner = format!(
            "{}/{}",
            ranked[0].0.strategy.name(),
            ranked[0].0.base.name()
        );
        match wins.iter_mut().find(|(name, _)| *name == winner) {
            Some((_, count)) => *count += 1,
            None => wins.push((winner, 1)),
        }
        let _ = writeln!(md, "| {} | {best} | {second} |", driver.name);
    }
    wins.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let _ = writeln!(md, "\n## Decision\n");
    match wins.first() {
        Some((winner, count)) => {
            let _ = writeln!(
                md,
                "On these measurements **{winner}** wins {count} of the drivers above. \
                 Weigh the drivers by what the fleet pays for: disk and pulls on many \
                 nodes, build minutes in CI, or runtime headroom.\n"
            );
        }
        None => {
            let _ = writeln!(md, "No driver was measured, so no decision follows.\n");
        }
    }
}

fn claim(md: &mut String, report: &BenchReport) {
    use crate::strategy::Strategy;
    let _ = writeln!(md, "## The claim against the measurements\n");
    let _ = writeln!(md, "Claimed: {CLAIM}.\n");
    let _ = writeln!(
        md,
        "| base | measure | separated (9 images) | unified (1 image) | unified vs separated |"
    );
    let _ = writeln!(md, "|---|---|--:|--:|--:|");
    let mut any = false;
    for &base in &report.settings.bases {
        let (Some(sep), Some(uni)) = (
            report.result(Strategy::Separated, base),
            report.result(Strategy::Unified, base),
        ) else {
            continue;
        };
        any = true;
        let rows = [
            (
                "naive (sum of images)",
                sep.fleet.naive_bytes,
                uni.fleet.naive_bytes,
            ),
            (
                "stored (distinct layers)",
                sep.fleet.stored_bytes,
                uni.fleet.stored_bytes,
            ),
            (
                "transfer (gzip)",
                sep.fleet.transfer_gzip_bytes,
                uni.fleet.transfer_gzip_bytes,
            ),
        ];
        for (measure, s, u) in rows {
            let change = if s == 0 {
                "-".to_string()
            } else {
                format!("{:+.0}%", (u as f64 / s as f64 - 1.0) * 100.0)
            };
            let _ = writeln!(
                md,
                "| {} | {measure} | {} | {} | {change} |",
                base.name(),
                format_bytes(s),
                format_bytes(u)
            );
        }
    }
    if !any {
        let _ = writeln!(
            md,
            "| - | separated and unified were not both measured | - | - | - |"
        );
    }
    let _ = writeln!(
        md,
        "\nThe claim's -88% is the naive row's arithmetic. What a node stores and \
         pulls is the stored and transfer rows, where per-worker images share their \
         base layers.\n"
    );
}

fn limits(md: &mut String, report: &BenchReport) {
    if report.not_working.is_empty() {
        return;
    }
    let _ = writeln!(md, "## What did not work in this run\n");
    for line in &report.not_working {
        let _ = writeln!(md, "- {line}");
    }
    md.push('\n');
}
