//! Grouping one (site, service)'s alerts into incidents: a pure function of
//! the set of alerts, so that it gives the same incidents whatever order
//! the alerts arrived in.

/// One alert as the grouping sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The alert's id.
    pub alert_id: String,
    /// Its event time, ms.
    pub raised_at_ms: i64,
    /// `warning` or `critical`.
    pub severity: String,
}

/// Alerts of one site and service close enough in time to be one problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// `site|service|opened_at_ms`.
    pub incident_id: String,
    /// Event time of its first alert, ms.
    pub opened_at_ms: i64,
    /// Event time of its last alert, ms.
    pub last_at_ms: i64,
    /// The highest severity among its alerts.
    pub severity: String,
    /// Its alerts' ids, in event-time order.
    pub alert_ids: Vec<String>,
}

/// Rank of a severity: `critical` above `warning` above anything else.
fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    }
}

/// The incidents of `site` and `service`'s alerts: sorted by event time
/// (then id), an alert joins the current incident when it is raised within
/// `gap_ms` of the incident's latest alert, and opens a new one otherwise.
/// Chains of close alerts therefore make one incident however long they
/// last.
pub fn incidents(
    site: &str,
    service: &str,
    mut members: Vec<Member>,
    gap_ms: i64,
) -> Vec<Incident> {
    members.sort_by(|a, b| (a.raised_at_ms, &a.alert_id).cmp(&(b.raised_at_ms, &b.alert_id)));
    let mut incidents: Vec<Incident> = Vec::new();
    for member in members {
        match incidents.last_mut() {
            Some(open) if member.raised_at_ms - open.last_at_ms <= gap_ms => {
                open.last_at_ms = member.raised_at_ms;
                if rank(&member.severity) > rank(&open.severity) {
                    open.severity = member.severity;
                }
                open.alert_ids.push(member.alert_id);
            }
            _ => incidents.push(Incident {
                incident_id: format!("{site}|{service}|{}", member.raised_at_ms),
                opened_at_ms: member.raised_at_ms,
                last_at_ms: member.raised_at_ms,
                severity: member.severity,
                alert_ids: vec![member.alert_id],
            }),
        }
    }
    incidents
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const GAP: i64 = 10 * MIN;

    fn member(id: &str, minute: i64, severity: &str) -> Member {
        Member {
            alert_id: id.into(),
            raised_at_ms: minute * MIN,
            severity: severity.into(),
        }
    }

    fn ids(incidents: &[Incident]) -> Vec<Vec<&str>> {
        incidents
            .iter()
            .map(|i| i.alert_ids.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn alerts_within_the_gap_of_each_other_form_one_incident() {
        let found = incidents(
            "lon",
            "web",
            vec![
                member("a", 0, "warning"),
                member("b", 10, "warning"),
                member("c", 21, "warning"),
            ],
            GAP,
        );
        assert_eq!(ids(&found), vec![vec!["a", "b"], vec!["c"]]);
        assert_eq!(found[0].incident_id, "lon|web|0");
        assert_eq!(found[0].last_at_ms, 10 * MIN);
        assert_eq!(found[1].incident_id, format!("lon|web|{}", 21 * MIN));
    }

    #[test]
    fn a_chain_of_close_alerts_is_one_incident_however_long() {
        let chain = (0..6)
            .map(|i| member(&format!("a{i}"), i * 9, "warning"))
            .collect();
        let found = incidents("lon", "web", chain, GAP);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].last_at_ms, 45 * MIN);
    }

    #[test]
    fn an_incident_takes_the_highest_severity_of_its_alerts() {
        let found = incidents(
            "lon",
            "web",
            vec![
                member("a", 0, "warning"),
                member("b", 2, "critical"),
                member("c", 4, "warning"),
            ],
            GAP,
        );
        assert_eq!(found[0].severity, "critical");
    }

    #[test]
    fn the_grouping_does_not_depend_on_arrival_order() {
        let alerts = vec![
            member("a", 0, "warning"),
            member("b", 5, "critical"),
            member("c", 30, "warning"),
            member("d", 5, "warning"),
        ];
        let mut reversed = alerts.clone();
        reversed.reverse();
        assert_eq!(
            incidents("lon", "web", alerts, GAP),
            incidents("lon", "web", reversed, GAP)
        );
    }

    #[test]
    fn no_alerts_make_no_incidents() {
        assert!(incidents("lon", "web", Vec::new(), GAP).is_empty());
    }
}
