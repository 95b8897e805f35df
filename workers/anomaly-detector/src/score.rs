//! Scoring one window: how far its mean is from what the series' model,
//! or its recent history, expects, in robust standard deviations. Pure
//! functions, unit tested and benchmarked.

use model_trainer::model::SeriesModel;
use model_trainer::robust::{floored_scale, median, trimmed_sigma};

/// `method` of a score against a trained model.
pub const METHOD_MODEL: &str = "model";
/// `method` of a robust z-score against the history.
pub const METHOD_ROBUST_Z: &str = "robust-z";

/// A window's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// What the model or history expected.
    pub expected: f64,
    /// The robust standard deviation the distance is measured in.
    pub scale: f64,
    /// `|value - expected| / scale`.
    pub score: f64,
}

impl Score {
    /// The score of `value` against `expected` and `scale`.
    fn of(value: f64, expected: f64, scale: f64) -> Self {
        Self {
            expected,
            scale,
            score: (value - expected).abs() / scale,
        }
    }

    /// Whether the score reaches `threshold`.
    pub fn is_anomalous(&self, threshold: f64) -> bool {
        self.score >= threshold
    }
}

/// The score of the window starting at `window_start_ms` with mean `value`
/// against `model`: its prediction and prediction scale.
pub fn against_model(model: &SeriesModel, window_start_ms: i64, value: f64) -> Score {
    let expected = model.predict(window_start_ms);
    let scale = model.prediction_scale(window_start_ms);
    Score::of(value, expected, floored_scale(scale, expected))
}

/// The robust z-score of `value` against `history` (the means of the
/// series' previous windows): distance from their median in standard
/// deviations of the history without its outliers (beyond 3.5 MADs), which
/// a spike moves as little as the MAD but which is far less noisy on ten
/// windows. `None` with fewer than `min_history` windows.
pub fn robust_z(history: &[f64], value: f64, min_history: usize) -> Option<Score> {
    if history.len() < min_history.max(2) {
        return None;
    }
    let center = median(history)?;
    let n = history.len() as f64;
    let scale = trimmed_sigma(history, 0)? * (1.0 + 1.0 / n).sqrt();
    Some(Score::of(value, center, floored_scale(scale, center)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_trainer::model::ModelKind;

    fn flat_history() -> Vec<f64> {
        vec![40.0, 41.0, 39.0, 40.5, 39.5, 40.0, 41.5, 38.5, 40.2, 39.8]
    }

    #[test]
    fn a_tripled_window_scores_far_beyond_the_threshold() {
        let score = robust_z(&flat_history(), 120.0, 10).unwrap();
        assert_eq!(score.expected, 40.0);
        assert!(score.is_anomalous(4.0), "{score:?}");
        assert!(score.score > 40.0, "{score:?}");
    }

    #[test]
    fn an_ordinary_window_stays_below_the_threshold() {
        let score = robust_z(&flat_history(), 41.2, 10).unwrap();
        assert!(!score.is_anomalous(4.0), "{score:?}");
    }

    #[test]
    fn a_drop_scores_like_a_spike() {
        let up = robust_z(&flat_history(), 50.0, 10).unwrap();
        let down = robust_z(&flat_history(), 30.0, 10).unwrap();
        assert_eq!(up.score, down.score);
    }

    #[test]
    fn too_short_a_history_is_not_scored() {
        assert_eq!(robust_z(&flat_history()[..9], 120.0, 10), None);
        assert_eq!(robust_z(&[], 120.0, 0), None);
    }

    #[test]
    fn a_spike_in_the_history_does_not_hide_the_next_one() {
        let mut history = flat_history();
        history[3] = 160.0;
        let score = robust_z(&history, 150.0, 10).unwrap();
        assert!(score.is_anomalous(4.0), "{score:?}");
    }

    #[test]
    fn a_model_scores_against_its_trend() {
        let model = SeriesModel {
            kind: ModelKind::Trend,
            origin_ms: 0,
            intercept: 100.0,
            trend_per_hour: 10.0,
            daily: None,
            residual_scale: 2.0,
            center_hours: 1.0,
            spread_hours2: 1e12,
            fitted: 20,
            trimmed: 0,
        };
        let one_hour_on = against_model(&model, 3_600_000, 112.0);
        assert_eq!(one_hour_on.expected, 110.0);
        assert!((one_hour_on.scale - 2.0 * 1.05f64.sqrt()).abs() < 1e-9);
        let far_from_the_history = against_model(&model, 3_600_000 * 1_000_000, 0.0);
        assert!(far_from_the_history.scale > 2.5, "{far_from_the_history:?}");
        assert!(against_model(&model, 3_600_000, 120.0).is_anomalous(4.0));
    }
}
