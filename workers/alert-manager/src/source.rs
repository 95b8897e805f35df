//! What raises an alert: an anomaly or a breaching capacity forecast,
//! validated and turned into the alert it raises (id, kind, severity, event
//! time, summary). Pure functions; what is invalid is an `Err` with the
//! reason, which dead-letters the message.

use fleet_runtime::events::{Alert, Anomaly, Forecast};

use crate::rules::Rules;

/// Kind of the alerts anomalies raise.
pub const ANOMALY: &str = "anomaly";
/// Kind of the alerts capacity forecasts raise.
pub const CAPACITY: &str = "capacity";

/// The alert an anomaly raises: `anomaly|window_id`, at the window's start.
pub fn from_anomaly(rules: &Rules, anomaly: Anomaly) -> Result<Alert, String> {
    require_names(
        "anomaly",
        &[
            ("window_id", &anomaly.window_id),
            ("entity", &anomaly.entity),
            ("site", &anomaly.site),
            ("service", &anomaly.service),
            ("metric", &anomaly.metric),
        ],
    )?;
    if !(anomaly.score.is_finite() && anomaly.value.is_finite() && anomaly.expected.is_finite()) {
        return Err(format!(
            "anomaly {}: score, value and expected must be finite numbers",
            anomaly.window_id
        ));
    }
    let severity = rules.anomaly_severity(anomaly.score);
    Ok(Alert {
        alert_id: format!("{ANOMALY}|{}", anomaly.window_id),
        source_id: anomaly.window_id,
        kind: ANOMALY.into(),
        summary: format!(
            "{} of {} at {:.1} where {:.1} was expected (score {:.1}, {})",
            anomaly.metric,
            anomaly.entity,
            anomaly.value,
            anomaly.expected,
            anomaly.score,
            anomaly.method
        ),
        entity: anomaly.entity,
        site: anomaly.site,
        service: anomaly.service,
        metric: anomaly.metric,
        severity: severity.as_str().into(),
        raised_at_ms: anomaly.window_start_ms,
    })
}

/// The alert a breaching forecast raises: `capacity|forecast_id`, at the
/// predicted window's start. A forecast that does not breach is rejected:
/// only breaching forecasts belong on the topic.
pub fn from_forecast(rules: &Rules, forecast: Forecast) -> Result<Alert, String> {
    require_names(
        "forecast",
        &[
            ("forecast_id", &forecast.forecast_id),
            ("entity", &forecast.entity),
            ("site", &forecast.site),
            ("service", &forecast.service),
            ("metric", &forecast.metric),
        ],
    )?;
    let id = &forecast.forecast_id;
    let Some(capacity) = forecast.capacity else {
        return Err(format!("forecast {id}: breaches no capacity (none given)"));
    };
    if !forecast.breach {
        return Err(format!(
            "forecast {id}: does not breach its capacity; only breaches raise alerts"
        ));
    }
    if !(forecast.predicted.is_finite() && capacity.is_finite() && capacity > 0.0) {
        return Err(format!(
            "forecast {id}: predicted must be finite and capacity finite and positive"
        ));
    }
    let severity = rules.capacity_severity(forecast.predicted, capacity);
    Ok(Alert {
        alert_id: format!("{CAPACITY}|{id}"),
        source_id: id.clone(),
        kind: CAPACITY.into(),
        summary: format!(
            "{} of {} forecast at {:.1} against a capacity of {:.1} (from window {})",
            forecast.metric, forecast.entity, forecast.predicted, capacity, forecast.made_from
        ),
        entity: forecast.entity,
        site: forecast.site,
        service: forecast.service,
        metric: forecast.metric,
        severity: severity.as_str().into(),
        raised_at_ms: forecast.target_start_ms,
    })
}

/// An error naming the first empty field of `fields`.
fn require_names(what: &str, fields: &[(&str, &String)]) -> Result<(), String> {
    match fields.iter().find(|(_, value)| value.trim().is_empty()) {
        Some((name, _)) => Err(format!("{what} without {name}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(score: f64) -> Anomaly {
        Anomaly {
            window_id: "web-1|latency|60000".into(),
            series_key: "web-1|latency".into(),
            entity: "web-1".into(),
            site: "lon".into(),
            service: "web".into(),
            metric: "latency".into(),
            window_start_ms: 60_000,
            value: 400.0,
            expected: 100.0,
            score,
            method: "model".into(),
            model_version: Some(1),
        }
    }

    fn forecast(predicted: f64, breach: bool) -> Forecast {
        Forecast {
            forecast_id: "db-1|cpu|0|120000".into(),
            series_key: "db-1|cpu".into(),
            entity: "db-1".into(),
            site: "fra".into(),
            service: "db".into(),
            metric: "cpu".into(),
            made_from: "db-1|cpu|0".into(),
            target_start_ms: 120_000,
            predicted,
            capacity: Some(90.0),
            breach,
        }
    }

    #[test]
    fn an_anomaly_raises_an_alert_keyed_by_its_window_at_its_start() {
        let alert = from_anomaly(&Rules::default(), anomaly(9.5)).unwrap();
        assert_eq!(alert.alert_id, "anomaly|web-1|latency|60000");
        assert_eq!(alert.source_id, "web-1|latency|60000");
        assert_eq!(alert.raised_at_ms, 60_000);
        assert_eq!(alert.severity, "critical");
    }

    #[test]
    fn a_breaching_forecast_raises_an_alert_at_its_target() {
        let alert = from_forecast(&Rules::default(), forecast(95.0, true)).unwrap();
        assert_eq!(alert.alert_id, "capacity|db-1|cpu|0|120000");
        assert_eq!(alert.raised_at_ms, 120_000);
        assert_eq!(alert.severity, "warning");
    }

    #[test]
    fn a_forecast_that_does_not_breach_is_rejected_with_its_id() {
        let err = from_forecast(&Rules::default(), forecast(50.0, false)).unwrap_err();
        assert!(err.contains("db-1|cpu|0|120000"), "{err}");
    }

    #[test]
    fn an_anomaly_without_an_entity_or_with_a_nan_score_is_rejected() {
        let mut nameless = anomaly(5.0);
        nameless.entity = " ".into();
        assert_eq!(
            from_anomaly(&Rules::default(), nameless).unwrap_err(),
            "anomaly without entity"
        );
        assert!(from_anomaly(&Rules::default(), anomaly(f64::NAN)).is_err());
    }
}
