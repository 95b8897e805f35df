//! The per-series model: a linear regression (linfa) of a KPI window's mean
//! on a trend and, once the history covers half a day, the daily cycle
//! (sine and cosine of the time of day, UTC), with a robust residual scale.
//!
//! Fitting trims outliers: after each least-squares fit, windows further
//! than [`TRIM_Z`] robust standard deviations from the fit are left out
//! and the fit is repeated, so a spike in the training history neither
//! tilts the trend nor widens the scale. The scale is the standard
//! deviation of the kept residuals, floored at 1% of the level. A
//! prediction's scale adds the uncertainty of the level and of the trend
//! extrapolated away from the history's centre (the textbook prediction
//! interval of a line); for the daily terms it adds nothing, which is close
//! enough for the half day of history they need.

use linfa::prelude::*;
use linfa::Dataset;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::robust::{floored_scale, mad_sigma, median, trimmed_sigma, TRIM_Z};

/// Milliseconds in an hour, the unit of the trend.
const HOUR_MS: f64 = 3_600_000.0;
/// Milliseconds in a day, the period of the seasonal terms.
const DAY_MS: i64 = 86_400_000;
/// History span from which the daily terms are fitted: below it, the
/// sine and cosine of a fraction of a day are nearly a line, collinear
/// with the trend.
pub const SEASONAL_MIN_SPAN_MS: i64 = DAY_MS / 2;
/// Most fits per model (the first and the refits after trimming).
const MAX_ROUNDS: usize = 5;

/// Shape of a fitted model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// The median level: too few windows for a regression, or it failed.
    Level,
    /// Level and linear trend.
    Trend,
    /// Level, linear trend and the daily cycle.
    TrendDaily,
}

/// Coefficients of the daily cycle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Daily {
    /// Coefficient of `sin(2π · time of day)`.
    pub sin: f64,
    /// Coefficient of `cos(2π · time of day)`.
    pub cos: f64,
}

/// A fitted model: what `anomaly_models.parameters` holds, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesModel {
    /// Shape of the model.
    pub kind: ModelKind,
    /// Origin of the trend (the epoch boundary), ms since the epoch.
    pub origin_ms: i64,
    /// Expected value at the origin, without the daily terms.
    pub intercept: f64,
    /// Change of the expected value per hour.
    pub trend_per_hour: f64,
    /// The daily cycle, when the history covered half a day.
    pub daily: Option<Daily>,
    /// Standard deviation of the residuals of the kept windows.
    pub residual_scale: f64,
    /// Mean time of the kept windows, hours from the origin.
    pub center_hours: f64,
    /// Sum of the squared distances of the kept windows' times from
    /// `center_hours`, hours²: how well the history pins the trend.
    pub spread_hours2: f64,
    /// Windows in the final fit.
    pub fitted: usize,
    /// Windows left out as outliers.
    pub trimmed: usize,
}

impl SeriesModel {
    /// The expected value of the window starting at `ts_ms`.
    pub fn predict(&self, ts_ms: i64) -> f64 {
        let hours = (ts_ms - self.origin_ms) as f64 / HOUR_MS;
        let mut value = self.intercept + self.trend_per_hour * hours;
        if let Some(daily) = self.daily {
            let (sin, cos) = day_cycle(ts_ms);
            value += daily.sin * sin + daily.cos * cos;
        }
        value
    }

    /// The standard deviation of a new window at `ts_ms` around
    /// [`predict`](Self::predict): the residual scale, widened by the
    /// uncertainty of the fitted level and trend.
    pub fn prediction_scale(&self, ts_ms: i64) -> f64 {
        let n = self.fitted.max(1) as f64;
        let mut variance = 1.0 + 1.0 / n;
        if self.kind != ModelKind::Level && self.spread_hours2 > 0.0 {
            let hours = (ts_ms - self.origin_ms) as f64 / HOUR_MS;
            variance += (hours - self.center_hours).powi(2) / self.spread_hours2;
        }
        self.residual_scale * variance.sqrt()
    }
}

/// Fits a model on `points` (window start ms, window mean), with the trend
/// measured from `origin_ms`. Never fails: with too few points, or when the
/// regression cannot be solved, the model is the median level.
pub fn fit(points: &[(i64, f64)], origin_ms: i64) -> SeriesModel {
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let level = median(&values).unwrap_or(0.0);
    let span_ms = match (
        points.iter().map(|p| p.0).min(),
        points.iter().map(|p| p.0).max(),
    ) {
        (Some(first), Some(last)) => last - first,
        _ => 0,
    };
    let seasonal = span_ms >= SEASONAL_MIN_SPAN_MS;
    let mut model = level_model(points, origin_ms, level);
    let mut kept = vec![true; points.len()];
    for _ in 0..MAX_ROUNDS {
        let sample: Vec<(i64, f64)> = points
            .iter()
            .zip(&kept)
            .filter(|(_, keep)| **keep)
            .map(|(p, _)| *p)
            .collect();
        let Some(fitted) = regress(&sample, origin_ms, seasonal) else {
            break;
        };
        model = with_scale(fitted, points, &kept, level);
        let next: Vec<bool> = points
            .iter()
            .map(|(ts, v)| (v - model.predict(*ts)).abs() <= TRIM_Z * model.residual_scale)
            .collect();
        if next == kept {
            break;
        }
        kept = next;
    }
    model
}

/// The median level of `points`, with the MAD as scale.
fn level_model(points: &[(i64, f64)], origin_ms: i64, level: f64) -> SeriesModel {
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let scale = mad_sigma(&values, level).unwrap_or(0.0);
    SeriesModel {
        kind: ModelKind::Level,
        origin_ms,
        intercept: level,
        trend_per_hour: 0.0,
        daily: None,
        residual_scale: floored_scale(scale, level),
        center_hours: 0.0,
        spread_hours2: 0.0,
        fitted: points.len(),
        trimmed: 0,
    }
}

/// `model` with its scale, time spread and counts taken from the `kept`
/// points.
fn with_scale(
    mut model: SeriesModel,
    points: &[(i64, f64)],
    kept: &[bool],
    level: f64,
) -> SeriesModel {
    let kept: Vec<(i64, f64)> = points
        .iter()
        .zip(kept)
        .filter(|(_, keep)| **keep)
        .map(|(p, _)| *p)
        .collect();
    let residuals: Vec<f64> = kept.iter().map(|(ts, v)| v - model.predict(*ts)).collect();
    let coefficients = if model.daily.is_some() { 3 } else { 1 };
    let scale = trimmed_sigma(&residuals, coefficients).unwrap_or(0.0);
    let hours: Vec<f64> = kept
        .iter()
        .map(|(ts, _)| (ts - model.origin_ms) as f64 / HOUR_MS)
        .collect();
    model.center_hours = hours.iter().sum::<f64>() / hours.len().max(1) as f64;
    model.spread_hours2 = hours.iter().map(|h| (h - model.center_hours).powi(2)).sum();
    model.residual_scale = floored_scale(scale, level);
    model.fitted = kept.len();
    model.trimmed = points.len() - kept.len();
    model
}

/// Least squares with linfa on `sample`; `None` with fewer points than
/// coefficients plus two, or when the system cannot be solved.
fn regress(sample: &[(i64, f64)], origin_ms: i64, seasonal: bool) -> Option<SeriesModel> {
    let features = if seasonal { 3 } else { 1 };
    if sample.len() < features + 3 {
        return None;
    }
    let mut x = Array2::<f64>::zeros((sample.len(), features));
    for (row, (ts, _)) in sample.iter().enumerate() {
        x[[row, 0]] = (ts - origin_ms) as f64 / HOUR_MS;
        if seasonal {
            let (sin, cos) = day_cycle(*ts);
            x[[row, 1]] = sin;
            x[[row, 2]] = cos;
        }
    }
    let y = Array1::from_iter(sample.iter().map(|p| p.1));
    let fitted = LinearRegression::new().fit(&Dataset::new(x, y)).ok()?;
    let params = fitted.params();
    let model = SeriesModel {
        kind: if seasonal {
            ModelKind::TrendDaily
        } else {
            ModelKind::Trend
        },
        origin_ms,
        intercept: fitted.intercept(),
        trend_per_hour: params[0],
        daily: seasonal.then(|| Daily {
            sin: params[1],
            cos: params[2],
        }),
        residual_scale: 0.0,
        center_hours: 0.0,
        spread_hours2: 0.0,
        fitted: sample.len(),
        trimmed: 0,
    };
    let finite = [model.intercept, model.trend_per_hour]
        .into_iter()
        .chain(model.daily.map(|d| [d.sin, d.cos]).into_iter().flatten())
        .all(f64::is_finite);
    finite.then_some(model)
}

/// Sine and cosine of the time of day of `ts_ms` (UTC), as an angle.
fn day_cycle(ts_ms: i64) -> (f64, f64) {
    let angle = std::f64::consts::TAU * ts_ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
    angle.sin_cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    const START_MS: i64 = 1_767_225_600_000;
    const WINDOW_MS: i64 = 60_000;

    /// Deterministic noise in [-1, 1], a small linear congruential sequence.
    fn noise(n: usize) -> Vec<f64> {
        let mut state: u64 = 42;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    fn series(n: usize, value: impl Fn(i64) -> f64) -> Vec<(i64, f64)> {
        noise(n)
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let ts = START_MS + i as i64 * WINDOW_MS;
                (ts, value(ts) + e)
            })
            .collect()
    }

    #[test]
    fn a_linear_trend_is_recovered_and_extrapolated() {
        let origin = START_MS + 40 * WINDOW_MS;
        let points = series(40, |ts| 100.0 + 6.0 * (ts - origin) as f64 / HOUR_MS);
        let model = fit(&points, origin);
        assert_eq!(model.kind, ModelKind::Trend);
        assert!((model.trend_per_hour - 6.0).abs() < 1.5, "{model:?}");
        assert!((model.predict(origin + 10 * WINDOW_MS) - 101.0).abs() < 1.0);
        assert!(
            model.residual_scale < 1.5 && model.residual_scale > 0.5,
            "{model:?}"
        );
    }

    #[test]
    fn a_spike_in_the_history_is_trimmed_and_tilts_nothing() {
        let origin = START_MS + 40 * WINDOW_MS;
        let mut points = series(40, |_| 40.0);
        points[22].1 *= 4.0;
        let model = fit(&points, origin);
        assert_eq!(model.trimmed, 1, "{model:?}");
        assert!(model.trend_per_hour.abs() < 1.5, "{model:?}");
        assert!((model.predict(origin) - 40.0).abs() < 0.6, "{model:?}");
        assert!(model.residual_scale < 1.2, "{model:?}");
    }

    #[test]
    fn two_days_of_history_fit_the_daily_cycle() {
        let points: Vec<(i64, f64)> = series(2 * 1440, |ts| 40.0 + 4.0 * day_cycle(ts).0);
        let origin = START_MS + 2 * DAY_MS;
        let model = fit(&points, origin);
        assert_eq!(model.kind, ModelKind::TrendDaily);
        let daily = model.daily.unwrap();
        assert!((daily.sin - 4.0).abs() < 0.2, "{model:?}");
        assert!(daily.cos.abs() < 0.2, "{model:?}");
        let six_am = origin + DAY_MS / 4;
        assert!((model.predict(six_am) - 44.0).abs() < 0.3, "{model:?}");
    }

    #[test]
    fn too_few_windows_give_the_median_level() {
        let points = [
            (START_MS, 10.0),
            (START_MS + WINDOW_MS, 12.0),
            (START_MS + 2 * WINDOW_MS, 11.0),
        ];
        let model = fit(&points, START_MS + 3 * WINDOW_MS);
        assert_eq!(model.kind, ModelKind::Level);
        assert_eq!(model.predict(START_MS + 10 * WINDOW_MS), 11.0);
        assert!(model.residual_scale > 0.0);
    }

    #[test]
    fn parameters_survive_a_round_trip_through_json() {
        let model = fit(&series(30, |_| 5.0), START_MS + 30 * WINDOW_MS);
        let json = serde_json::to_value(&model).unwrap();
        assert_eq!(json["kind"], "trend");
        let back: SeriesModel = serde_json::from_value(json).unwrap();
        assert_eq!(back, model);
    }
}
