//! The cutoff rule: up to which event time raw measurements may be rolled
//! up and deleted. Pure functions, unit tested.

/// The event time before which measurements may be compacted, ms, or
/// `None` when nothing may be: the older of `now_ms - retention_ms` (the
/// retention) and `watermark_ms` (the KPI worker's watermark, the smallest
/// `closed_until_ms` of all series). Without a watermark (`kpi_progress`
/// empty) the KPI worker has closed no window yet, so every stored
/// measurement may still belong to a window it will compute: nothing is
/// compacted.
pub fn cutoff_ms(now_ms: i64, retention_ms: i64, watermark_ms: Option<i64>) -> Option<i64> {
    let retained_from_ms = now_ms.saturating_sub(retention_ms);
    watermark_ms.map(|watermark_ms| watermark_ms.min(retained_from_ms))
}

/// Start of the UTC hour holding `ts_ms`: the key of its rollup. The SQL
/// does the same with `date_trunc('hour', event_time, 'UTC')`; this one
/// serves the docs and the tests.
pub fn hour_start_ms(ts_ms: i64) -> i64 {
    const HOUR_MS: i64 = 3_600_000;
    ts_ms - ts_ms.rem_euclid(HOUR_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;
    const NOW_MS: i64 = 1_767_830_400_000; // 2026-01-08T00:00Z

    #[test]
    fn without_a_kpi_watermark_nothing_is_compacted() {
        assert_eq!(cutoff_ms(NOW_MS, 7 * DAY_MS, None), None);
    }

    #[test]
    fn a_kpi_worker_far_ahead_leaves_the_retention_in_charge() {
        assert_eq!(
            cutoff_ms(NOW_MS, 7 * DAY_MS, Some(NOW_MS)),
            Some(NOW_MS - 7 * DAY_MS)
        );
    }

    #[test]
    fn a_kpi_worker_behind_the_retention_holds_the_cutoff_back() {
        let watermark = NOW_MS - 10 * DAY_MS;
        assert_eq!(
            cutoff_ms(NOW_MS, 7 * DAY_MS, Some(watermark)),
            Some(watermark)
        );
    }

    #[test]
    fn a_zero_retention_compacts_up_to_the_watermark() {
        assert_eq!(cutoff_ms(NOW_MS, 0, Some(NOW_MS - 1)), Some(NOW_MS - 1));
        assert_eq!(cutoff_ms(NOW_MS, 0, Some(NOW_MS + 1)), Some(NOW_MS));
    }

    #[test]
    fn an_absurd_retention_saturates_instead_of_overflowing() {
        assert_eq!(
            cutoff_ms(NOW_MS, i64::MAX, Some(0)),
            Some(NOW_MS - i64::MAX)
        );
        assert_eq!(cutoff_ms(i64::MIN, 1, Some(0)), Some(i64::MIN));
    }

    #[test]
    fn hours_are_utc_hours_aligned_to_the_epoch() {
        assert_eq!(hour_start_ms(NOW_MS + 3_599_999), NOW_MS);
        assert_eq!(hour_start_ms(NOW_MS + 3_600_000), NOW_MS + 3_600_000);
        assert_eq!(hour_start_ms(-1), -3_600_000);
    }
}
