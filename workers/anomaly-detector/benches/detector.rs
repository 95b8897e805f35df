//! The detector's hot paths on synthetic windows: scoring (windows per
//! second, against a model and by robust z-score over 60 windows) and
//! fitting a model on N windows (the trainer's cost per series and epoch).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use anomaly_detector::score::{against_model, robust_z};
use model_trainer::model::fit;

const START_MS: i64 = 1_767_225_600_000;
const WINDOW_MS: i64 = 60_000;

/// `n` windows of a latency-like series: level 40, a slow daily swing and
/// deterministic noise of about 1.6.
fn windows(n: usize) -> Vec<(i64, f64)> {
    let mut state: u64 = 7;
    (0..n)
        .map(|i| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 5.6;
            let ts = START_MS + i as i64 * WINDOW_MS;
            let day = (ts % 86_400_000) as f64 / 86_400_000.0;
            (
                ts,
                40.0 * (1.0 + 0.1 * (std::f64::consts::TAU * day).sin()) + noise,
            )
        })
        .collect()
}

fn scoring(c: &mut Criterion) {
    let history = windows(1_000);
    let origin = history[40].0;
    let model = fit(&history[..40], origin);
    let scored = &history[40..];
    let mut group = c.benchmark_group("scoring");
    group.throughput(Throughput::Elements(scored.len() as u64));
    group.bench_function("against_model", |b| {
        b.iter(|| {
            scored
                .iter()
                .filter(|(ts, v)| against_model(&model, *ts, *v).is_anomalous(4.0))
                .count()
        })
    });
    let means: Vec<f64> = history.iter().map(|p| p.1).collect();
    group.throughput(Throughput::Elements((means.len() - 60) as u64));
    group.bench_function("robust_z_over_60_windows", |b| {
        b.iter(|| {
            (60..means.len())
                .filter_map(|i| robust_z(&means[i - 60..i], means[i], 10))
                .filter(|s| s.is_anomalous(4.0))
                .count()
        })
    });
    group.finish();
}

fn fitting(c: &mut Criterion) {
    let mut group = c.benchmark_group("model_fit");
    for n in [20, 240, 1440] {
        let points = windows(n);
        let origin = points[n - 1].0 + WINDOW_MS;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &points, |b, points| {
            b.iter(|| fit(points, origin))
        });
    }
    group.finish();
}

criterion_group!(benches, scoring, fitting);
criterion_main!(benches);
