//! The forecast model: an ordinary least-squares regression (linfa) of a
//! series' window means on a linear trend and, when the history can
//! estimate it, one seasonal harmonic; and its prediction of the windows
//! that follow the newest one.
//!
//! The seasonal rule: the sine and cosine of the phase within the period
//! are included only when the history covers at least one whole period
//! (from the start of its oldest window to the end of its newest), its
//! windows fall on at least [`MIN_SEASONAL_PHASES`] distinct phases of the
//! period, and there are at least [`MIN_SEASONAL_POINTS`] windows. A
//! shorter history cannot tell a cycle from a trend, and windows on fewer
//! phases cannot tell the cycle's shape, so those are fitted with the
//! trend alone; so is a seasonal fit the solver rejects.

use std::f64::consts::TAU;

use linfa::traits::{Fit, Predict};
use linfa::Dataset;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};

/// Fewest windows a fit accepts: two parameters and one degree of freedom.
pub const MIN_POINTS: usize = 3;
/// Fewest windows for the seasonal fit: two per parameter.
pub const MIN_SEASONAL_POINTS: usize = 8;
/// Fewest distinct phases within the period for the seasonal fit: three
/// points on a circle already fix a sine and cosine, one more checks them.
pub const MIN_SEASONAL_PHASES: usize = 4;

/// One closed window of a series: its start and its mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Window start, ms since the epoch.
    pub start_ms: i64,
    /// The window's mean value.
    pub mean: f64,
}

/// What the model needs besides the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// Window length, ms: the step between two predicted windows.
    pub window_ms: i64,
    /// Seasonal period, ms.
    pub season_ms: i64,
    /// How many windows after the newest one to predict.
    pub horizon: u32,
}

/// The explanatory terms of a fit (an intercept is always fitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terms {
    /// A linear trend in window time.
    Trend,
    /// A linear trend plus the sine and cosine of the seasonal phase.
    TrendAndSeason,
}

impl Terms {
    /// A short name for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Terms::Trend => "trend",
            Terms::TrendAndSeason => "trend+season",
        }
    }
}

/// One predicted window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Start of the predicted window, ms since the epoch.
    pub target_start_ms: i64,
    /// The predicted mean of that window.
    pub value: f64,
}

/// Why a history gave no forecast.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Too few windows to fit anything.
    #[error("{have} windows of history; a fit needs at least {need}")]
    TooShort {
        /// Windows given.
        have: usize,
        /// Windows needed.
        need: usize,
    },
    /// The least-squares solver failed.
    #[error("fitting the {terms} regression: {message}")]
    Fit {
        /// The terms fitted.
        terms: &'static str,
        /// The solver's error.
        message: String,
    },
    /// The fit predicted NaN or infinity.
    #[error("the {terms} regression predicts a value that is not finite")]
    NotFinite {
        /// The terms fitted.
        terms: &'static str,
    },
}

/// The terms the seasonal rule allows for `history` (oldest first).
pub fn terms_for(history: &[Point], spec: &ModelSpec) -> Terms {
    let (Some(oldest), Some(newest)) = (history.first(), history.last()) else {
        return Terms::Trend;
    };
    let span_ms = newest.start_ms - oldest.start_ms + spec.window_ms;
    let covers_period = span_ms >= spec.season_ms;
    let phases: std::collections::BTreeSet<i64> = history
        .iter()
        .map(|p| p.start_ms.rem_euclid(spec.season_ms))
        .collect();
    if covers_period && phases.len() >= MIN_SEASONAL_PHASES && history.len() >= MIN_SEASONAL_POINTS
    {
        Terms::TrendAndSeason
    } else {
        Terms::Trend
    }
}

/// Fits `history` (oldest first, distinct starts) and predicts the
/// `spec.horizon` windows after its newest one.
pub fn forecast(history: &[Point], spec: &ModelSpec) -> Result<Vec<Prediction>, ModelError> {
    let Some(newest) = history.last() else {
        return Err(ModelError::TooShort {
            have: 0,
            need: MIN_POINTS,
        });
    };
    if history.len() < MIN_POINTS {
        return Err(ModelError::TooShort {
            have: history.len(),
            need: MIN_POINTS,
        });
    }
    let targets: Vec<i64> = (1..=i64::from(spec.horizon))
        .map(|step| newest.start_ms + step * spec.window_ms)
        .collect();
    let terms = terms_for(history, spec);
    match fit_and_predict(history, &targets, newest.start_ms, spec, terms) {
        Err(ModelError::Fit { .. } | ModelError::NotFinite { .. })
            if terms == Terms::TrendAndSeason =>
        {
            fit_and_predict(history, &targets, newest.start_ms, spec, Terms::Trend)
        }
        result => result,
    }
}

fn fit_and_predict(
    history: &[Point],
    targets: &[i64],
    newest_ms: i64,
    spec: &ModelSpec,
    terms: Terms,
) -> Result<Vec<Prediction>, ModelError> {
    let records = design(history.iter().map(|p| p.start_ms), newest_ms, spec, terms);
    let means = Array1::from_iter(history.iter().map(|p| p.mean));
    let model = LinearRegression::new()
        .fit(&Dataset::new(records, means))
        .map_err(|e| ModelError::Fit {
            terms: terms.name(),
            message: e.to_string(),
        })?;
    let predicted = model.predict(&design(targets.iter().copied(), newest_ms, spec, terms));
    if predicted.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::NotFinite {
            terms: terms.name(),
        });
    }
    Ok(targets
        .iter()
        .zip(predicted.iter())
        .map(|(&target_start_ms, &value)| Prediction {
            target_start_ms,
            value,
        })
        .collect())
}

/// The design matrix: one row per window start. Time is counted in
/// windows from the newest one, so the trend's scale does not depend on
/// the epoch; the phase is taken from the epoch, so a daily period is
/// aligned with UTC days.
fn design(
    starts: impl ExactSizeIterator<Item = i64>,
    newest_ms: i64,
    spec: &ModelSpec,
    terms: Terms,
) -> Array2<f64> {
    let columns = match terms {
        Terms::Trend => 1,
        Terms::TrendAndSeason => 3,
    };
    let rows = starts.len();
    let mut values = Vec::with_capacity(rows * columns);
    for start_ms in starts {
        values.push((start_ms - newest_ms) as f64 / spec.window_ms as f64);
        if terms == Terms::TrendAndSeason {
            let phase = TAU * start_ms.rem_euclid(spec.season_ms) as f64 / spec.season_ms as f64;
            values.push(phase.sin());
            values.push(phase.cos());
        }
    }
    Array2::from_shape_vec((rows, columns), values).expect("rows times columns values")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE_MS: i64 = 60_000;
    const DAY_MS: i64 = 86_400_000;

    fn series(windows: i64, value: impl Fn(i64) -> f64) -> Vec<Point> {
        (0..windows)
            .map(|i| Point {
                start_ms: i * MINUTE_MS,
                mean: value(i * MINUTE_MS),
            })
            .collect()
    }

    fn spec(season_ms: i64, horizon: u32) -> ModelSpec {
        ModelSpec {
            window_ms: MINUTE_MS,
            season_ms,
            horizon,
        }
    }

    #[test]
    fn a_straight_line_is_continued_exactly() {
        let history = series(12, |ms| 10.0 + 2.0 * (ms / MINUTE_MS) as f64);
        let predictions = forecast(&history, &spec(DAY_MS, 3)).unwrap();
        let starts: Vec<i64> = predictions.iter().map(|p| p.target_start_ms).collect();
        assert_eq!(starts, vec![12 * MINUTE_MS, 13 * MINUTE_MS, 14 * MINUTE_MS]);
        for (p, want) in predictions.iter().zip([34.0, 36.0, 38.0]) {
            assert!((p.value - want).abs() < 1e-9, "{p:?} != {want}");
        }
    }

    #[test]
    fn a_flat_series_predicts_its_level() {
        let history = series(10, |_| 42.5);
        for p in forecast(&history, &spec(DAY_MS, 5)).unwrap() {
            assert!((p.value - 42.5).abs() < 1e-9, "{p:?}");
        }
    }

    #[test]
    fn missing_windows_do_not_bend_the_trend() {
        let mut history = series(21, |ms| 5.0 - 0.5 * (ms / MINUTE_MS) as f64);
        history.retain(|p| p.start_ms / MINUTE_MS % 3 != 1);
        let predictions = forecast(&history, &spec(DAY_MS, 1)).unwrap();
        assert_eq!(predictions[0].target_start_ms, 21 * MINUTE_MS);
        assert!((predictions[0].value - (5.0 - 0.5 * 21.0)).abs() < 1e-9);
    }

    #[test]
    fn the_least_squares_line_goes_through_noisy_points() {
        // y = 1, 3, 2, 4 at x = -3..0: slope 0.8, intercept at x = 0 of 3.7.
        let history: Vec<Point> = [1.0, 3.0, 2.0, 4.0]
            .iter()
            .enumerate()
            .map(|(i, &mean)| Point {
                start_ms: i as i64 * MINUTE_MS,
                mean,
            })
            .collect();
        let predictions = forecast(&history, &spec(DAY_MS, 2)).unwrap();
        assert!((predictions[0].value - 4.5).abs() < 1e-9, "{predictions:?}");
        assert!((predictions[1].value - 5.3).abs() < 1e-9, "{predictions:?}");
    }

    #[test]
    fn a_history_of_a_whole_period_fits_the_season() {
        let season_ms = 20 * MINUTE_MS;
        let truth = |ms: i64| {
            let phase = TAU * (ms % season_ms) as f64 / season_ms as f64;
            50.0 + 0.1 * (ms / MINUTE_MS) as f64 + 8.0 * phase.sin() - 3.0 * phase.cos()
        };
        let history = series(30, truth);
        assert_eq!(
            terms_for(&history, &spec(season_ms, 5)),
            Terms::TrendAndSeason
        );
        for p in forecast(&history, &spec(season_ms, 5)).unwrap() {
            let want = truth(p.target_start_ms);
            assert!((p.value - want).abs() < 1e-6, "{p:?} != {want}");
        }
    }

    #[test]
    fn half_an_hour_of_a_daily_cycle_is_fitted_as_a_trend() {
        // The fixture's shape: a 10 % daily sine, seen for 30 minutes.
        let truth = |ms: i64| 40.0 * (1.0 + 0.1 * (TAU * ms as f64 / DAY_MS as f64).sin());
        let history = series(30, truth);
        assert_eq!(terms_for(&history, &spec(DAY_MS, 5)), Terms::Trend);
        for p in forecast(&history, &spec(DAY_MS, 5)).unwrap() {
            assert!((p.value - truth(p.target_start_ms)).abs() < 0.01, "{p:?}");
        }
    }

    #[test]
    fn a_period_of_three_windows_has_too_few_phases() {
        let history = series(40, |_| 1.0);
        assert_eq!(terms_for(&history, &spec(3 * MINUTE_MS, 1)), Terms::Trend);
    }

    #[test]
    fn a_seasonal_fit_of_seven_windows_is_refused() {
        let season_ms = 4 * MINUTE_MS;
        assert_eq!(
            terms_for(&series(7, |_| 1.0), &spec(season_ms, 1)),
            Terms::Trend
        );
        assert_eq!(
            terms_for(&series(8, |_| 1.0), &spec(season_ms, 1)),
            Terms::TrendAndSeason
        );
    }

    #[test]
    fn windows_all_on_one_phase_are_fitted_as_a_trend() {
        // Every window starts on the same phase: sine and cosine are constant.
        let season_ms = 4 * MINUTE_MS;
        let history: Vec<Point> = (0..10)
            .map(|i| Point {
                start_ms: i * season_ms,
                mean: 3.0 + i as f64,
            })
            .collect();
        let spec = spec(season_ms, 1);
        assert_eq!(terms_for(&history, &spec), Terms::Trend);
        let predictions = forecast(&history, &spec).unwrap();
        assert!(
            (predictions[0].value - 12.25).abs() < 1e-9,
            "{predictions:?}"
        );
    }

    #[test]
    fn two_windows_are_too_few() {
        let err = forecast(&series(2, |_| 1.0), &spec(DAY_MS, 1)).unwrap_err();
        assert!(
            matches!(err, ModelError::TooShort { have: 2, need: 3 }),
            "{err}"
        );
    }
}
