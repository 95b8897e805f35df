//! Epochs: the fixed event-time boundaries at which a series gets a new
//! model. Boundaries are multiples of the epoch length counted from the
//! Unix epoch, so the trainer and the detector agree on them without
//! talking to each other, whatever their timing: the model of boundary `B`
//! is fitted on the windows that start in `[B - history, B)` and scores the
//! windows that start in `[B, B + epoch)`.

use fleet_runtime::config::{env_number, ConfigError};

/// Shortest epoch allowed, ms: keeps the epoch number (the model version)
/// within an `i32` for millennia.
const MIN_EPOCH_MS: i64 = 60_000;

/// When models are trained and on which windows. Both the trainer and the
/// detector read these settings and must be given the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epochs {
    /// KPI window length, ms (`KPI_WINDOW_S`).
    pub window_ms: i64,
    /// Windows per epoch (`MODEL_EPOCH_WINDOWS`).
    pub epoch_windows: i64,
    /// Fewest windows before a boundary for a model to be trained there
    /// (`MODEL_MIN_WINDOWS`).
    pub min_windows: i64,
    /// Windows before a boundary a model is fitted on, at most
    /// (`MODEL_HISTORY_WINDOWS`).
    pub history_windows: i64,
}

impl Default for Epochs {
    fn default() -> Self {
        Self {
            window_ms: 60_000,
            epoch_windows: 20,
            min_windows: 15,
            history_windows: 1440,
        }
    }
}

impl Epochs {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads `KPI_WINDOW_S` (default 60), `MODEL_EPOCH_WINDOWS` (20),
    /// `MODEL_MIN_WINDOWS` (15) and `MODEL_HISTORY_WINDOWS` (1440) through
    /// `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let window_s: i64 = env_number(&lookup, "KPI_WINDOW_S", 60, 1..=86_400)?;
        let epochs = Self {
            window_ms: window_s * 1000,
            epoch_windows: env_number(&lookup, "MODEL_EPOCH_WINDOWS", 20, 1..=100_000)?,
            min_windows: env_number(&lookup, "MODEL_MIN_WINDOWS", 15, 3..=100_000)?,
            history_windows: env_number(&lookup, "MODEL_HISTORY_WINDOWS", 1440, 3..=1_000_000)?,
        };
        if epochs.epoch_ms() < MIN_EPOCH_MS {
            return Err(ConfigError {
                variable: "MODEL_EPOCH_WINDOWS",
                problem: format!(
                    "{} windows of {window_s} s make an epoch shorter than 60 s",
                    epochs.epoch_windows
                ),
            });
        }
        if epochs.min_windows > epochs.history_windows {
            return Err(ConfigError {
                variable: "MODEL_MIN_WINDOWS",
                problem: format!(
                    "{} is more than MODEL_HISTORY_WINDOWS ({}): no model could ever be trained",
                    epochs.min_windows, epochs.history_windows
                ),
            });
        }
        Ok(epochs)
    }

    /// Length of an epoch, ms.
    pub fn epoch_ms(&self) -> i64 {
        self.window_ms * self.epoch_windows
    }

    /// The newest boundary at or before `ts_ms`.
    pub fn boundary_at_or_before(&self, ts_ms: i64) -> i64 {
        ts_ms - ts_ms.rem_euclid(self.epoch_ms())
    }

    /// The model version of boundary `boundary_ms`: its epoch number.
    pub fn version(&self, boundary_ms: i64) -> i32 {
        i32::try_from(boundary_ms.div_euclid(self.epoch_ms()))
            .expect("an epoch of at least 60 s keeps epoch numbers within i32")
    }

    /// Window starts a model of boundary `boundary_ms` is fitted on:
    /// `[from, to)`.
    pub fn training_range(&self, boundary_ms: i64) -> (i64, i64) {
        (
            boundary_ms - self.history_windows * self.window_ms,
            boundary_ms,
        )
    }

    /// Whether a boundary with `windows` windows in its training range gets
    /// a model.
    pub fn is_trainable(&self, windows: i64) -> bool {
        windows >= self.min_windows
    }

    /// Boundaries after a series' first window (starting at
    /// `first_window_ms`) whose windows are all closed by `closed_until_ms`.
    pub fn closed_boundaries(
        &self,
        first_window_ms: i64,
        closed_until_ms: i64,
    ) -> impl Iterator<Item = i64> {
        let epoch_ms = self.epoch_ms();
        let first = self.boundary_at_or_before(first_window_ms) + epoch_ms;
        (0..)
            .map(move |n| first + n * epoch_ms)
            .take_while(move |boundary| *boundary <= closed_until_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_1_2026_MS: i64 = 1_767_225_600_000;

    #[test]
    fn boundaries_are_multiples_of_the_epoch_from_the_unix_epoch() {
        let epochs = Epochs::default();
        assert_eq!(epochs.epoch_ms(), 1_200_000);
        let b = epochs.boundary_at_or_before(JAN_1_2026_MS + 1_199_999);
        assert_eq!(b, JAN_1_2026_MS);
        assert_eq!(
            epochs.boundary_at_or_before(JAN_1_2026_MS + 1_200_000),
            JAN_1_2026_MS + 1_200_000
        );
        assert_eq!(epochs.version(JAN_1_2026_MS), 1_472_688);
    }

    #[test]
    fn only_boundaries_whose_windows_are_all_closed_are_listed() {
        let epochs = Epochs::default();
        let closed_until = JAN_1_2026_MS + 58 * 60_000;
        let listed: Vec<i64> = epochs
            .closed_boundaries(JAN_1_2026_MS, closed_until)
            .collect();
        assert_eq!(
            listed,
            vec![JAN_1_2026_MS + 1_200_000, JAN_1_2026_MS + 2_400_000]
        );
        let at_boundary: Vec<i64> = epochs
            .closed_boundaries(JAN_1_2026_MS, JAN_1_2026_MS + 1_200_000)
            .collect();
        assert_eq!(at_boundary, vec![JAN_1_2026_MS + 1_200_000]);
    }

    #[test]
    fn a_model_is_fitted_on_at_most_the_history_before_its_boundary() {
        let epochs = Epochs::default();
        let (from, to) = epochs.training_range(JAN_1_2026_MS);
        assert_eq!(to, JAN_1_2026_MS);
        assert_eq!(to - from, 1440 * 60_000);
        assert!(!epochs.is_trainable(14));
        assert!(epochs.is_trainable(15));
    }

    #[test]
    fn an_epoch_shorter_than_a_minute_is_rejected_by_name() {
        let env = |key: &str| match key {
            "KPI_WINDOW_S" => Some("10".to_string()),
            "MODEL_EPOCH_WINDOWS" => Some("3".to_string()),
            _ => None,
        };
        let err = Epochs::from_lookup(env).unwrap_err();
        assert_eq!(err.variable, "MODEL_EPOCH_WINDOWS");
    }

    #[test]
    fn more_minimum_windows_than_history_is_rejected_by_name() {
        let env = |key: &str| match key {
            "MODEL_MIN_WINDOWS" => Some("50".to_string()),
            "MODEL_HISTORY_WINDOWS" => Some("40".to_string()),
            _ => None,
        };
        let err = Epochs::from_lookup(env).unwrap_err();
        assert_eq!(err.variable, "MODEL_MIN_WINDOWS");
    }
}
