//! Validation and unit normalisation of one raw measurement: the pure part
//! of the ingestor, with the reasons a message is rejected.

use fleet_runtime::events::{Measurement, RawTelemetry};

/// Earliest accepted event time: 2000-01-01T00:00:00Z.
const EARLIEST_MS: i64 = 946_684_800_000;
/// Latest accepted event time: 2100-01-01T00:00:00Z.
const LATEST_MS: i64 = 4_102_444_800_000;
/// CPU above this many percent (100 cores) is a broken agent.
const CPU_PERCENT_LIMIT: f64 = 10_000.0;

/// Validates `raw` and converts its value to the canonical unit.
pub fn measurement(raw: RawTelemetry) -> Result<Measurement, String> {
    check_name("event_id", &raw.event_id, 128)?;
    for (field, value) in [
        ("entity", &raw.entity),
        ("site", &raw.site),
        ("service", &raw.service),
    ] {
        check_name(field, value, 64)?;
    }
    if !(EARLIEST_MS..LATEST_MS).contains(&raw.ts_ms) {
        return Err(format!("ts_ms {} is outside 2000-2100", raw.ts_ms));
    }
    if !raw.value.is_finite() || raw.value < 0.0 {
        return Err(format!(
            "value {} is not a finite, non-negative number",
            raw.value
        ));
    }
    let (value, unit) = canonical(&raw.metric, &raw.unit, raw.value)?;
    if raw.metric == "cpu" && value > CPU_PERCENT_LIMIT {
        return Err(format!("cpu {value} percent is above {CPU_PERCENT_LIMIT}"));
    }
    Ok(Measurement {
        event_id: raw.event_id,
        ts_ms: raw.ts_ms,
        entity: raw.entity,
        site: raw.site,
        service: raw.service,
        metric: raw.metric,
        value,
        unit: unit.to_string(),
        error: raw.error,
    })
}

/// The value in the metric's canonical unit, or why the pair is unknown.
pub fn canonical(metric: &str, unit: &str, value: f64) -> Result<(f64, &'static str), String> {
    let (factor, canonical) = match (metric, unit) {
        ("latency", "ms") => (1.0, "ms"),
        ("latency", "s") => (1000.0, "ms"),
        ("latency", "us") => (0.001, "ms"),
        ("cpu", "percent") => (1.0, "percent"),
        ("cpu", "ratio") => (100.0, "percent"),
        ("memory", "bytes") => (1.0, "bytes"),
        ("memory", "KiB") => (1024.0, "bytes"),
        ("memory", "MiB") => (1_048_576.0, "bytes"),
        ("memory", "GiB") => (1_073_741_824.0, "bytes"),
        ("requests", "count") => (1.0, "count"),
        ("latency" | "cpu" | "memory" | "requests", _) => {
            return Err(format!("unit '{unit}' is not a unit of {metric}"))
        }
        _ => return Err(format!("metric '{metric}' is unknown")),
    };
    // Rounded to a micro-unit so that 0.0123 s is 12.3 ms, not 12.299999.
    Ok(((value * factor * 1e6).round() / 1e6, canonical))
}

fn check_name(field: &str, value: &str, max_len: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max_len {
        return Err(format!("{field} must have 1 to {max_len} characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(format!(
            "{field} '{value}' has characters other than letters, digits, - _ . :"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(metric: &str, unit: &str, value: f64) -> RawTelemetry {
        RawTelemetry {
            event_id: "ev-1".into(),
            ts_ms: 1_767_225_600_000,
            entity: "lon-checkout-1".into(),
            site: "lon".into(),
            service: "checkout".into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            error: false,
        }
    }

    #[test]
    fn seconds_become_milliseconds_and_ratios_percent() {
        assert_eq!(
            measurement(raw("latency", "s", 0.0123)).unwrap().value,
            12.3
        );
        let cpu = measurement(raw("cpu", "ratio", 0.355)).unwrap();
        assert_eq!((cpu.value, cpu.unit.as_str()), (35.5, "percent"));
        assert_eq!(
            measurement(raw("memory", "MiB", 2.0)).unwrap().value,
            2_097_152.0
        );
    }

    #[test]
    fn a_unit_that_does_not_fit_the_metric_is_rejected_by_name() {
        let err = measurement(raw("latency", "percent", 1.0)).unwrap_err();
        assert_eq!(err, "unit 'percent' is not a unit of latency");
    }

    #[test]
    fn an_unknown_metric_is_rejected() {
        assert_eq!(
            measurement(raw("temperature", "C", 1.0)).unwrap_err(),
            "metric 'temperature' is unknown"
        );
    }

    #[test]
    fn negative_and_non_finite_values_are_rejected() {
        assert!(measurement(raw("latency", "ms", -1.0)).is_err());
        assert!(measurement(raw("latency", "ms", f64::INFINITY)).is_err());
    }

    #[test]
    fn timestamps_outside_the_century_are_rejected() {
        let mut event = raw("latency", "ms", 1.0);
        event.ts_ms = 12;
        assert!(measurement(event).unwrap_err().contains("ts_ms 12"));
    }

    #[test]
    fn names_with_spaces_or_empty_are_rejected() {
        let mut event = raw("latency", "ms", 1.0);
        event.entity = "web 01".into();
        assert!(measurement(event).unwrap_err().starts_with("entity"));
        let mut event = raw("latency", "ms", 1.0);
        event.event_id.clear();
        assert!(measurement(event).unwrap_err().starts_with("event_id"));
    }
}
