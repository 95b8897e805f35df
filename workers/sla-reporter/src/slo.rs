//! The SLO arithmetic of one service's UTC day: availability from the
//! requests and errors of its `latency` windows, compliance with the two
//! targets, and the share of the error budget the day burned.

use fleet_runtime::config::{env_number, ConfigError};

/// Milliseconds in a UTC day (no leap seconds, as in Unix time).
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day holding `ms`, as days since 1970-01-01.
pub fn day_of(ms: i64) -> i32 {
    ms.div_euclid(DAY_MS) as i32
}

/// The two objectives a service is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloTargets {
    /// `SLO_AVAILABILITY`: least share of requests that succeed, in (0, 1)
    /// (default 0.995).
    pub availability: f64,
    /// `SLO_LATENCY_P95_MS`: most the day's p95 latency may be, ms
    /// (default 200).
    pub latency_p95_ms: f64,
}

impl Default for SloTargets {
    fn default() -> Self {
        Self {
            availability: 0.995,
            latency_p95_ms: 200.0,
        }
    }
}

impl SloTargets {
    /// Reads the targets from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads the targets through `lookup`, for tests and embedding.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let availability = match lookup("SLO_AVAILABILITY") {
            None => defaults.availability,
            Some(text) => match text.trim().parse::<f64>() {
                Ok(value) if value > 0.0 && value < 1.0 => value,
                _ => {
                    return Err(ConfigError {
                        variable: "SLO_AVAILABILITY",
                        problem: format!("'{text}' is not a fraction between 0 and 1, like 0.995"),
                    })
                }
            },
        };
        let latency_p95_ms: u32 = env_number(&lookup, "SLO_LATENCY_P95_MS", 200, 1..=3_600_000)?;
        Ok(Self {
            availability,
            latency_p95_ms: f64::from(latency_p95_ms),
        })
    }

    /// How `totals` measure up to the targets.
    pub fn assess(&self, totals: &DayTotals) -> Compliance {
        let availability = availability(totals.requests, totals.errors);
        Compliance {
            availability,
            availability_met: availability >= self.availability,
            latency_met: totals.latency_p95_ms <= self.latency_p95_ms,
            error_budget_burn: error_budget_burn(availability, self.availability),
        }
    }
}

/// What one service's `latency` windows of one day add up to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayTotals {
    /// Windows counted.
    pub windows: i64,
    /// Requests: the latency measurements of those windows.
    pub requests: i64,
    /// Requests flagged as failed.
    pub errors: i64,
    /// The nearest-rank 95th percentile of the windows' p95 latencies, ms.
    pub latency_p95_ms: f64,
}

/// A day's standing against the targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compliance {
    /// Share of requests that succeeded.
    pub availability: f64,
    /// Whether the availability reaches its target.
    pub availability_met: bool,
    /// Whether the p95 latency stays at or under its target.
    pub latency_met: bool,
    /// Share of the error budget burned: 1 means exactly all of it.
    pub error_budget_burn: f64,
}

/// Share of `requests` that did not fail; a day without requests is whole.
pub fn availability(requests: i64, errors: i64) -> f64 {
    if requests <= 0 {
        return 1.0;
    }
    1.0 - errors as f64 / requests as f64
}

/// `(1 - availability) / (1 - target)`: how much of the failures the target
/// allows were spent. `target` is below 1, so the budget is never zero.
pub fn error_budget_burn(availability: f64, target: f64) -> f64 {
    (1.0 - availability) / (1.0 - target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn targets(pairs: &[(&str, &str)]) -> Result<SloTargets, ConfigError> {
        let env: HashMap<&str, &str> = pairs.iter().copied().collect();
        SloTargets::from_lookup(|key| env.get(key).map(|v| v.to_string()))
    }

    fn totals(requests: i64, errors: i64, latency_p95_ms: f64) -> DayTotals {
        DayTotals {
            windows: 10,
            requests,
            errors,
            latency_p95_ms,
        }
    }

    #[test]
    fn one_failure_in_two_hundred_spends_the_whole_budget_of_three_nines_and_a_half() {
        let compliance = SloTargets::default().assess(&totals(200, 1, 50.0));
        assert!((compliance.availability - 0.995).abs() < 1e-15);
        assert!((compliance.error_budget_burn - 1.0).abs() < 1e-9);
        assert!(compliance.latency_met);
    }

    #[test]
    fn twice_the_allowed_failures_burn_twice_the_budget_and_miss_the_target() {
        let compliance = SloTargets::default().assess(&totals(1000, 10, 50.0));
        assert!((compliance.availability - 0.99).abs() < 1e-15);
        assert!((compliance.error_budget_burn - 2.0).abs() < 1e-9);
        assert!(!compliance.availability_met);
    }

    #[test]
    fn a_day_without_failures_burns_nothing() {
        let compliance = SloTargets::default().assess(&totals(5000, 0, 50.0));
        assert_eq!(compliance.availability, 1.0);
        assert_eq!(compliance.error_budget_burn, 0.0);
        assert!(compliance.availability_met);
    }

    #[test]
    fn a_p95_at_the_target_meets_it_and_above_misses_it() {
        let slo = SloTargets::default();
        assert!(slo.assess(&totals(10, 0, 200.0)).latency_met);
        assert!(!slo.assess(&totals(10, 0, 200.001)).latency_met);
    }

    #[test]
    fn a_day_without_requests_is_fully_available() {
        assert_eq!(availability(0, 0), 1.0);
    }

    #[test]
    fn days_are_utc_and_start_at_midnight() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(day_of(-1), -1);
        // 2026-01-01T00:00Z, the fixture's start.
        assert_eq!(day_of(1_767_225_600_000), 20_454);
    }

    #[test]
    fn an_availability_target_must_be_a_fraction_below_one() {
        assert_eq!(
            targets(&[("SLO_AVAILABILITY", "0.999")])
                .unwrap()
                .availability,
            0.999
        );
        for bad in ["1", "0", "99.5", "high"] {
            let err = targets(&[("SLO_AVAILABILITY", bad)]).unwrap_err();
            assert_eq!(err.variable, "SLO_AVAILABILITY", "{bad}");
        }
    }

    #[test]
    fn a_latency_target_is_whole_milliseconds() {
        assert_eq!(
            targets(&[("SLO_LATENCY_P95_MS", "350")])
                .unwrap()
                .latency_p95_ms,
            350.0
        );
        let err = targets(&[("SLO_LATENCY_P95_MS", "0")]).unwrap_err();
        assert_eq!(err.variable, "SLO_LATENCY_P95_MS");
    }
}
