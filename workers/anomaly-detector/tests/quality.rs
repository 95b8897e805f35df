//! The scoring rules on the fixture's KPI windows, computed offline (the
//! KPI test oracle, no services): the models and scores the trainer and the
//! detector would produce, checked against the injected anomalies. A fast
//! guard of detection quality beside the end-to-end fixture test.

#[allow(dead_code)]
#[path = "../../kpi-worker/tests/support/expected.rs"]
mod expected;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use anomaly_detector::score::{against_model, robust_z, Score};
use anomaly_detector::Settings;
use model_trainer::model::{fit, SeriesModel};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fixture's closed windows per series: (start ms, mean), oldest first.
fn series() -> BTreeMap<String, Vec<(i64, f64)>> {
    let (lines, _) = expected::fixture(&root());
    let mut series: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for (id, window) in expected::expected_windows(&lines) {
        let (key, start) = id.rsplit_once('|').unwrap();
        series
            .entry(key.to_string())
            .or_default()
            .push((start.parse().unwrap(), window.mean));
    }
    for windows in series.values_mut() {
        windows.sort_by_key(|w| w.0);
    }
    series
}

/// The score of window `i` of `windows` under the detector's rules.
fn score(
    windows: &[(i64, f64)],
    i: usize,
    settings: &Settings,
    models: &mut HashMap<i64, SeriesModel>,
) -> Option<Score> {
    let (start, mean) = windows[i];
    let epochs = settings.epochs;
    let boundary = epochs.boundary_at_or_before(start);
    let (from, to) = epochs.training_range(boundary);
    let training: Vec<(i64, f64)> = windows
        .iter()
        .copied()
        .filter(|w| w.0 >= from && w.0 < to)
        .collect();
    if epochs.is_trainable(training.len() as i64) {
        let model = models
            .entry(boundary)
            .or_insert_with(|| fit(&training, boundary));
        return Some(against_model(model, start, mean));
    }
    let history: Vec<f64> = windows[i.saturating_sub(settings.history_windows)..i]
        .iter()
        .rev()
        .map(|w| w.1)
        .collect();
    robust_z(&history, mean, settings.min_history)
}

#[test]
fn the_scoring_rules_find_every_closed_injected_spike_with_few_false_alarms() {
    let settings = Settings::default();
    let injected: HashSet<String> = serde_json::from_str::<Vec<serde_json::Value>>(
        &std::fs::read_to_string(root().join("fixtures/expected/anomalies.json")).unwrap(),
    )
    .unwrap()
    .iter()
    .map(|a| {
        format!(
            "{}|{}|{}",
            a["entity"].as_str().unwrap(),
            a["metric"].as_str().unwrap(),
            a["window_start_ms"]
        )
    })
    .collect();
    let (mut found, mut false_alarms, mut normal_scored, mut closed_injected) = (0, 0, 0, 0);
    let mut highest_normal: f64 = 0.0;
    for (key, windows) in series() {
        let mut models = HashMap::new();
        for i in 0..windows.len() {
            let id = format!("{key}|{}", windows[i].0);
            let is_injected = injected.contains(&id);
            closed_injected += usize::from(is_injected);
            let Some(score) = score(&windows, i, &settings, &mut models) else {
                continue;
            };
            match (is_injected, score.is_anomalous(settings.threshold)) {
                (true, true) => found += 1,
                (true, false) => println!("missed {id}: {score:?}"),
                (false, flagged) => {
                    normal_scored += 1;
                    false_alarms += usize::from(flagged);
                    highest_normal = highest_normal.max(score.score);
                }
            }
        }
    }
    let recall = found as f64 / closed_injected as f64;
    let fp_rate = false_alarms as f64 / normal_scored as f64;
    println!(
        "closed injected {closed_injected}, found {found}, false alarms {false_alarms} of \
         {normal_scored}, highest normal score {highest_normal:.2}: recall {recall:.3}, \
         false-positive rate {fp_rate:.4}"
    );
    assert!(recall >= 0.9, "recall {recall}");
    assert!(fp_rate <= 0.05, "false-positive rate {fp_rate}");
}
