//! Parse and validate throughput (events/s): the ingestor's `parse` (JSON,
//! validation, unit normalisation) over every line of the committed
//! fixture, as the runtime calls it for each message of `telemetry.raw`.
//! Rejected lines count too: rejecting is part of the work.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use data_ingestor::Ingestor;
use fleet_runtime::events::TELEMETRY_RAW;
use fleet_runtime::Processor;

fn fixture_lines() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/telemetry.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the fixture {}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

fn parse_and_validate(c: &mut Criterion) {
    let lines = fixture_lines();
    let ingestor = Ingestor::default();
    let mut group = c.benchmark_group("data-ingestor");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("parse and validate the fixture", |b| {
        b.iter(|| {
            let mut valid = 0usize;
            for line in &lines {
                if ingestor
                    .parse(TELEMETRY_RAW, black_box(line.as_bytes()))
                    .is_ok()
                {
                    valid += 1;
                }
            }
            valid
        })
    });
    group.finish();
}

criterion_group!(benches, parse_and_validate);
criterion_main!(benches);
