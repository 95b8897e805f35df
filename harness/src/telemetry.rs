//! The deterministic telemetry generator: seeded events for every series of
//! the fleet, with anomalies injected at known windows and the small flaws
//! real agents have (mixed units, failed operations, events sent twice).
//! The same settings always give the same events, byte for byte.

use std::path::Path;

use fleet_runtime::events::RawTelemetry;
use serde::{Deserialize, Serialize};

/// Errors reading generator settings.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The settings file could not be read.
    #[error("reading generator settings {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The settings file is not valid.
    #[error("parsing generator settings {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// What to generate; see `fixtures/generator.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSettings {
    /// Seed of the random sequence.
    pub seed: u64,
    /// Event time of the first sample, ms since the epoch.
    pub start_ms: i64,
    /// Length of the generated period, seconds.
    pub duration_s: u32,
    /// Time between two samples of one series, ms.
    pub interval_ms: u32,
    /// KPI window length, seconds; anomalies fill whole windows.
    pub window_s: u32,
    /// Sites (regions).
    pub sites: Vec<String>,
    /// Services.
    pub services: Vec<String>,
    /// Entities per service and site.
    pub entities_per_service: u32,
    /// Metrics per entity: `latency`, `cpu`, `memory`, `requests`.
    pub metrics: Vec<String>,
    /// Windows with an injected spike.
    pub anomalies: u32,
    /// Windows of history before the first possible anomaly.
    pub warmup_windows: u32,
    /// Windows at the end of the stream without anomalies: an event-time
    /// window closes only once later events pass its end plus the allowed
    /// lateness, so the stream's last windows never close and a spike there
    /// could not be detected.
    #[serde(default)]
    pub cooldown_windows: u32,
    /// Share of operations flagged as failed.
    pub error_rate: f64,
    /// Share of events sent twice.
    pub duplicate_rate: f64,
}

/// A window in which every sample of one series was multiplied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InjectedAnomaly {
    /// The entity.
    pub entity: String,
    /// The metric.
    pub metric: String,
    /// Start of the window, ms since the epoch.
    pub window_start_ms: i64,
    /// The factor the samples were multiplied by.
    pub factor: f64,
}

/// The generated events and the anomalies placed in them.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Events in send order (event time, then series), duplicates included.
    pub events: Vec<RawTelemetry>,
    /// The injected anomalies, by window start.
    pub anomalies: Vec<InjectedAnomaly>,
}

impl GeneratorSettings {
    /// Reads settings from a TOML file.
    pub fn load(path: &Path) -> Result<Self, TelemetryError> {
        let text = std::fs::read_to_string(path).map_err(|source| TelemetryError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| TelemetryError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// SplitMix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal, by Box-Muller.
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One series: an entity's metric, with its normal level and noise.
struct Series {
    entity: String,
    site: String,
    service: String,
    metric: String,
    base: f64,
    noise: f64,
}

fn series(settings: &GeneratorSettings) -> Vec<Series> {
    let mut all = Vec::new();
    for site in &settings.sites {
        for service in &settings.services {
            for n in 1..=settings.entities_per_service {
                for metric in &settings.metrics {
                    let (base, noise) = match metric.as_str() {
                        "latency" => (40.0, 4.0),
                        "cpu" => (35.0, 3.0),
                        "memory" => (2.0e9, 5.0e7),
                        _ => (500.0, 25.0),
                    };
                    all.push(Series {
                        entity: format!("{site}-{service}-{n}"),
                        site: site.clone(),
                        service: service.clone(),
                        metric: metric.clone(),
                        base,
                        noise,
                    });
                }
            }
        }
    }
    all
}

/// How an agent reports a canonical value: some agents use other units.
fn as_reported(metric: &str, canonical: f64, variant: usize) -> (f64, &'static str) {
    match (metric, variant % 2) {
        ("latency", 0) => (canonical, "ms"),
        ("latency", _) => (canonical / 1000.0, "s"),
        ("cpu", 0) => (canonical, "percent"),
        ("cpu", _) => (canonical / 100.0, "ratio"),
        ("memory", 0) => (canonical, "bytes"),
        ("memory", _) => (canonical / 1_048_576.0, "MiB"),
        _ => (canonical.round(), "count"),
    }
}

/// Generates the events of `settings`.
pub fn generate(settings: &GeneratorSettings) -> Telemetry {
    let mut rng = Rng(settings.seed);
    let all = series(settings);
    let anomalies = place_anomalies(settings, &all, &mut rng);
    let window_ms = i64::from(settings.window_s) * 1000;
    let samples = i64::from(settings.duration_s) * 1000 / i64::from(settings.interval_ms);
    let mut events = Vec::new();
    for step in 0..samples {
        let ts_ms = settings.start_ms + step * i64::from(settings.interval_ms);
        let window_start_ms = ts_ms - (ts_ms - settings.start_ms) % window_ms;
        let day_phase = (ts_ms % 86_400_000) as f64 / 86_400_000.0;
        for (index, s) in all.iter().enumerate() {
            let seasonal = 1.0 + 0.1 * (std::f64::consts::TAU * day_phase).sin();
            let mut value = (s.base * seasonal + s.noise * rng.normal()).max(0.0);
            if let Some(a) = anomalies.iter().find(|a| {
                a.entity == s.entity && a.metric == s.metric && a.window_start_ms == window_start_ms
            }) {
                value *= a.factor;
            }
            let (reported, unit) = as_reported(&s.metric, value, index + step as usize / 60);
            let event = RawTelemetry {
                event_id: format!("ev-{:08}-{index:03}", step),
                ts_ms,
                entity: s.entity.clone(),
                site: s.site.clone(),
                service: s.service.clone(),
                metric: s.metric.clone(),
                value: (reported * 1000.0).round() / 1000.0,
                unit: unit.to_string(),
                error: rng.unit() < settings.error_rate,
            };
            if rng.unit() < settings.duplicate_rate {
                events.push(event.clone());
            }
            events.push(event);
        }
    }
    Telemetry { events, anomalies }
}

/// Picks distinct (series, window) pairs after the warm-up.
fn place_anomalies(
    settings: &GeneratorSettings,
    all: &[Series],
    rng: &mut Rng,
) -> Vec<InjectedAnomaly> {
    let windows = settings.duration_s / settings.window_s;
    let candidates = windows
        .saturating_sub(settings.warmup_windows)
        .saturating_sub(settings.cooldown_windows) as usize;
    let mut placed: Vec<InjectedAnomaly> = Vec::new();
    if candidates == 0 || all.is_empty() {
        return placed;
    }
    while placed.len() < settings.anomalies as usize && placed.len() < candidates * all.len() {
        let s = &all[rng.below(all.len())];
        let window = settings.warmup_windows as usize + rng.below(candidates);
        let window_start_ms =
            settings.start_ms + window as i64 * i64::from(settings.window_s) * 1000;
        if placed.iter().any(|a| {
            a.entity == s.entity && a.metric == s.metric && a.window_start_ms == window_start_ms
        }) {
            continue;
        }
        placed.push(InjectedAnomaly {
            entity: s.entity.clone(),
            metric: s.metric.clone(),
            window_start_ms,
            factor: 3.0 + 2.0 * rng.unit(),
        });
    }
    placed.sort_by(|a, b| {
        (a.window_start_ms, &a.entity, &a.metric).cmp(&(b.window_start_ms, &b.entity, &b.metric))
    });
    placed
}

/// The events as JSON lines, as the fixture file holds them.
pub fn to_json_lines(events: &[RawTelemetry]) -> String {
    let mut out = String::new();
    for event in events {
        out.push_str(&serde_json::to_string(event).expect("events serialise"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> GeneratorSettings {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/generator.toml");
        GeneratorSettings::load(&path).unwrap()
    }

    #[test]
    fn the_same_settings_give_the_same_bytes() {
        let settings = shipped();
        assert_eq!(
            to_json_lines(&generate(&settings).events),
            to_json_lines(&generate(&settings).events)
        );
    }

    #[test]
    fn another_seed_gives_other_values() {
        let mut settings = shipped();
        let first = generate(&settings);
        settings.seed += 1;
        assert_ne!(
            to_json_lines(&first.events),
            to_json_lines(&generate(&settings).events)
        );
    }

    #[test]
    fn the_committed_fixture_is_what_the_settings_generate() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/telemetry.jsonl");
        let committed = std::fs::read_to_string(path).unwrap();
        assert_eq!(committed, to_json_lines(&generate(&shipped()).events));
        assert!(
            committed.len() <= 1_000_000,
            "fixture is {} bytes",
            committed.len()
        );
    }

    #[test]
    fn anomalies_are_distinct_whole_windows_between_the_warm_up_and_the_cool_down() {
        let settings = shipped();
        let telemetry = generate(&settings);
        assert_eq!(telemetry.anomalies.len(), settings.anomalies as usize);
        let window_ms = i64::from(settings.window_s) * 1000;
        let earliest = settings.start_ms + i64::from(settings.warmup_windows) * window_ms;
        let windows = i64::from(settings.duration_s / settings.window_s);
        let last =
            settings.start_ms + (windows - i64::from(settings.cooldown_windows) - 1) * window_ms;
        for anomaly in &telemetry.anomalies {
            assert!(anomaly.window_start_ms >= earliest, "{anomaly:?}");
            assert!(anomaly.window_start_ms <= last, "{anomaly:?}");
            assert!((3.0..5.0).contains(&anomaly.factor), "{anomaly:?}");
        }
    }

    #[test]
    fn agents_report_in_mixed_units_and_some_events_twice() {
        let telemetry = generate(&shipped());
        let units: std::collections::BTreeSet<_> =
            telemetry.events.iter().map(|e| e.unit.as_str()).collect();
        assert!(
            units.contains("s") && units.contains("ms") && units.contains("ratio"),
            "{units:?}"
        );
        let ids: std::collections::HashSet<_> =
            telemetry.events.iter().map(|e| &e.event_id).collect();
        assert!(
            ids.len() < telemetry.events.len(),
            "no duplicate was generated"
        );
    }
}
