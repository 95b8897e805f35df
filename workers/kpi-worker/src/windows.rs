//! Event-time tumbling windows: where a timestamp's window starts, and how
//! far a series' windows may be closed once its events have reached a time,
//! given the allowed lateness. Pure functions, unit tested.

/// Start of the window of length `window_ms` holding `ts_ms`, aligned to
/// the epoch.
pub fn window_start(ts_ms: i64, window_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(window_ms)
}

/// A series' progress: the latest event time seen, and the end of the last
/// closed window (every window ending at or before it is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Latest event time seen, ms.
    pub max_event_ms: i64,
    /// End of the last closed window, ms.
    pub closed_until_ms: i64,
}

/// Moves a series' progress over a batch whose events span
/// `[batch_min_ms, batch_max_ms]`; returns the new progress and the range
/// `[from, to)` of windows to close now, if any.
///
/// A window `[s, s + w)` closes once an event at or after `s + w +
/// lateness` has been seen: events up to `lateness` late still count.
pub fn advance(
    progress: Option<Progress>,
    batch_min_ms: i64,
    batch_max_ms: i64,
    window_ms: i64,
    lateness_ms: i64,
) -> (Progress, Option<(i64, i64)>) {
    let previous = progress.unwrap_or(Progress {
        max_event_ms: batch_min_ms,
        closed_until_ms: window_start(batch_min_ms, window_ms),
    });
    let max_event_ms = previous.max_event_ms.max(batch_max_ms);
    let closable = window_start(max_event_ms - lateness_ms, window_ms);
    let next = Progress {
        max_event_ms,
        closed_until_ms: previous.closed_until_ms.max(closable),
    };
    let range = (next.closed_until_ms > previous.closed_until_ms)
        .then_some((previous.closed_until_ms, next.closed_until_ms));
    (next, range)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 60_000;

    #[test]
    fn windows_align_to_the_epoch() {
        assert_eq!(window_start(125_000, W), 120_000);
        assert_eq!(window_start(120_000, W), 120_000);
        assert_eq!(window_start(-1, W), -W);
    }

    #[test]
    fn the_first_batch_closes_nothing_within_the_lateness() {
        let (progress, range) = advance(None, 120_500, 150_000, W, W);
        assert_eq!(progress.closed_until_ms, 120_000);
        assert_eq!(range, None);
    }

    #[test]
    fn a_window_closes_once_an_event_passes_its_end_plus_the_lateness() {
        let (first, _) = advance(None, 120_500, 150_000, W, W);
        let (second, range) = advance(Some(first), 170_000, 239_999, W, W);
        assert_eq!(range, None, "179_999 + lateness not reached");
        let (third, range) = advance(Some(second), 240_000, 240_000, W, W);
        assert_eq!(range, Some((120_000, 180_000)));
        assert_eq!(third.closed_until_ms, 180_000);
    }

    #[test]
    fn a_late_batch_never_moves_progress_back() {
        let progress = Progress {
            max_event_ms: 600_000,
            closed_until_ms: 540_000,
        };
        let (next, range) = advance(Some(progress), 100_000, 200_000, W, W);
        assert_eq!(next, progress);
        assert_eq!(range, None);
    }
}
