//! The alert rules, as pure functions: severity of an anomaly or a capacity
//! forecast, and what becomes of a new alert given the earlier alerts of
//! its key (notified, suppressed, or held because the key flaps).
//!
//! Every distance is measured in event time and taken as an absolute
//! value, `|a - b| < span`: capacity alerts of one series do not arrive in
//! event-time order (a forecast made from window W raises targets W+1..W+5,
//! the next one W+2..W+6), and a symmetric distance gives the same answer
//! for an alert whether the alert it is compared with lies before or after
//! it in event time.

use std::time::Duration;

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Needs someone now.
    Critical,
}

impl Severity {
    /// The name stored and published: `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What became of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// It opened an episode of its key and people were notified.
    Notified,
    /// It repeats an episode already open (within the suppression span of
    /// an alert that opened one): stored, published, not notified.
    Suppressed,
    /// It opened an episode while its key flaps: stored, published, its
    /// notification held back.
    Flapping,
}

impl State {
    /// The name stored in `alerts.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Notified => "notified",
            State::Suppressed => "suppressed",
            State::Flapping => "flapping",
        }
    }

    /// The state named `name` in `alerts.state`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "notified" => Some(State::Notified),
            "suppressed" => Some(State::Suppressed),
            "flapping" => Some(State::Flapping),
            _ => None,
        }
    }

    /// Whether an alert in this state opened an episode of its key.
    pub fn opens_episode(self) -> bool {
        self != State::Suppressed
    }
}

/// The alert manager's settings (see the crate docs for the variables).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Anomaly score from which an anomaly alert is critical.
    pub critical_score: f64,
    /// A capacity forecast is critical from `capacity * factor` on.
    pub capacity_critical_factor: f64,
    /// Span around an episode's opening alert within which the key's
    /// further alerts are suppressed.
    pub suppress: Duration,
    /// Episode openings within `flap_window` (the new one included) from
    /// which a key flaps.
    pub flap_count: usize,
    /// Span within which `flap_count` openings make a key flap.
    pub flap_window: Duration,
    /// Quiet span a flapping key needs, away from its last held opening,
    /// before it notifies again.
    pub flap_quiet: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            critical_score: 8.0,
            capacity_critical_factor: 1.2,
            suppress: Duration::from_secs(600),
            flap_count: 3,
            flap_window: Duration::from_secs(3600),
            flap_quiet: Duration::from_secs(1800),
        }
    }
}

/// An earlier alert of a key that opened an episode (notified or held).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    /// Its event time, ms.
    pub raised_at_ms: i64,
    /// `Notified` or `Flapping`.
    pub state: State,
}

/// What the rules need to know of one key's earlier alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHistory {
    /// Episode openings near the alerts to decide (within the longest span
    /// of the rules), in the order they were decided.
    pub openings: Vec<Opening>,
    /// Openings held as flapping since the key's last notification.
    pub held: i64,
}

/// The rules' verdict on one new alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What becomes of the alert.
    pub state: State,
    /// For a notified alert: how many flapping openings of its key were
    /// held since the previous notification (0 otherwise).
    pub held: i64,
}

impl Rules {
    /// Severity of an anomaly of robust z-score `score`.
    pub fn anomaly_severity(&self, score: f64) -> Severity {
        if score.abs() >= self.critical_score {
            Severity::Critical
        } else {
            Severity::Warning
        }
    }

    /// Severity of a forecast of `predicted` against `capacity`.
    pub fn capacity_severity(&self, predicted: f64, capacity: f64) -> Severity {
        if predicted >= capacity * self.capacity_critical_factor {
            Severity::Critical
        } else {
            Severity::Warning
        }
    }

    /// The longest span any rule looks at: a key's openings further than
    /// this from every alert to decide cannot change a decision.
    pub fn reach(&self) -> Duration {
        self.suppress.max(self.flap_window).max(self.flap_quiet)
    }

    /// Decides an alert of event time `raised_at_ms` given its key's
    /// earlier alerts, and records it in `history`:
    ///
    /// 1. suppressed when an earlier opening lies within `suppress`;
    /// 2. otherwise it opens an episode, held as flapping when the key's
    ///    openings within `flap_window` reach `flap_count` (this one
    ///    included), or when a held opening lies within `flap_quiet`;
    /// 3. otherwise notified, carrying the count of openings held since
    ///    the previous notification.
    pub fn decide(&self, history: &mut KeyHistory, raised_at_ms: i64) -> Decision {
        let within = |span: Duration, other: i64| {
            (raised_at_ms - other).unsigned_abs() < span.as_millis() as u64
        };
        if history
            .openings
            .iter()
            .any(|o| within(self.suppress, o.raised_at_ms))
        {
            return Decision {
                state: State::Suppressed,
                held: 0,
            };
        }
        let recent = history
            .openings
            .iter()
            .filter(|o| within(self.flap_window, o.raised_at_ms))
            .count();
        let still_flapping = history
            .openings
            .iter()
            .any(|o| o.state == State::Flapping && within(self.flap_quiet, o.raised_at_ms));
        let decision = if recent + 1 >= self.flap_count || still_flapping {
            history.held += 1;
            Decision {
                state: State::Flapping,
                held: 0,
            }
        } else {
            let held = std::mem::take(&mut history.held);
            Decision {
                state: State::Notified,
                held,
            }
        };
        history.openings.push(Opening {
            raised_at_ms,
            state: decision.state,
        });
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn states(rules: &Rules, times_min: &[i64]) -> Vec<State> {
        let mut history = KeyHistory::default();
        times_min
            .iter()
            .map(|t| rules.decide(&mut history, t * MIN).state)
            .collect()
    }

    #[test]
    fn an_anomaly_is_critical_from_the_critical_score_on() {
        let rules = Rules::default();
        assert_eq!(rules.anomaly_severity(7.9), Severity::Warning);
        assert_eq!(rules.anomaly_severity(8.0), Severity::Critical);
        assert_eq!(rules.anomaly_severity(-9.0), Severity::Critical);
    }

    #[test]
    fn a_forecast_is_critical_only_past_capacity_times_the_factor() {
        let rules = Rules::default();
        assert_eq!(rules.capacity_severity(95.0, 90.0), Severity::Warning);
        assert_eq!(rules.capacity_severity(108.0, 90.0), Severity::Critical);
    }

    #[test]
    fn repeats_within_the_suppression_span_are_suppressed() {
        use State::*;
        let rules = Rules::default();
        assert_eq!(
            states(&rules, &[0, 1, 9, 10]),
            vec![Notified, Suppressed, Suppressed, Notified]
        );
    }

    #[test]
    fn suppression_looks_both_ways_in_event_time() {
        let rules = Rules::default();
        let mut history = KeyHistory::default();
        assert_eq!(rules.decide(&mut history, 25 * MIN).state, State::Notified);
        assert_eq!(
            rules.decide(&mut history, 21 * MIN).state,
            State::Suppressed,
            "an earlier target of a later forecast repeats the open episode"
        );
    }

    #[test]
    fn forecasts_of_overlapping_horizons_notify_once() {
        let rules = Rules::default();
        let mut history = KeyHistory::default();
        let mut notified = 0;
        for made_from in 0..5 {
            for target in made_from + 1..=made_from + 5 {
                if rules.decide(&mut history, target * MIN).state == State::Notified {
                    notified += 1;
                }
            }
        }
        assert_eq!(notified, 1);
    }

    #[test]
    fn a_key_with_three_openings_in_an_hour_flaps_until_they_thin_out() {
        use State::*;
        let rules = Rules::default();
        assert_eq!(
            states(&rules, &[0, 20, 40, 45, 70, 100]),
            vec![
                Notified,   // first opening
                Notified,   // second opening within the hour
                Flapping,   // third opening within the hour: held
                Suppressed, // repeat of the held episode
                Flapping,   // 20, 40 and 70 within the hour
                Notified,   // only 70 within the hour, 30 min after it
            ]
        );
    }

    #[test]
    fn a_flapping_key_is_held_until_it_has_been_quiet() {
        use State::*;
        let rules = Rules {
            flap_quiet: Duration::from_secs(50 * 60),
            ..Rules::default()
        };
        assert_eq!(
            states(&rules, &[0, 20, 40, 85, 140]),
            vec![
                Notified, Notified, Flapping, // three openings within the hour
                Flapping, // few openings, but 45 min after a held one
                Notified, // 55 min after the last held opening
            ]
        );
    }

    #[test]
    fn the_notification_after_flapping_counts_what_was_held() {
        let rules = Rules::default();
        let mut history = KeyHistory::default();
        let held: Vec<i64> = [0, 20, 40, 70, 110]
            .iter()
            .map(|t| rules.decide(&mut history, t * MIN).held)
            .collect();
        assert_eq!(held, vec![0, 0, 0, 0, 2]);
        assert_eq!(history.held, 0);
    }

    #[test]
    fn a_flap_count_of_one_holds_every_opening() {
        let rules = Rules {
            flap_count: 1,
            ..Rules::default()
        };
        assert_eq!(
            states(&rules, &[0, 5, 200]),
            vec![State::Flapping, State::Suppressed, State::Flapping]
        );
    }
}
