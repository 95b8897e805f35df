//! The `alerts` table: a key's earlier alerts as the rules need them, the
//! insertion of decided alerts, and the outbox of alerts not yet published.

use std::collections::HashSet;

use fleet_runtime::events::Alert;
use sqlx::PgConnection;

use crate::rules::{KeyHistory, Opening, State};

/// The key every rule is scoped to: alerts of one kind, entity and metric.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlertKey {
    /// `anomaly` or `capacity`.
    pub kind: String,
    /// Host or instance.
    pub entity: String,
    /// Metric name.
    pub metric: String,
}

impl AlertKey {
    /// The key of `alert`.
    pub fn of(alert: &Alert) -> Self {
        Self {
            kind: alert.kind.clone(),
            entity: alert.entity.clone(),
            metric: alert.metric.clone(),
        }
    }
}

impl std::fmt::Display for AlertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}|{}|{}", self.kind, self.entity, self.metric)
    }
}

/// A key's history and the sequence number its next alert gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// What the rules need.
    pub history: KeyHistory,
    /// One past the key's highest sequence number.
    pub next_seq: i64,
}

/// Serialises the writers of `key` until the transaction ends, so that two
/// members of the group briefly owning one partition during a rebalance
/// never decide the same key at once.
pub async fn lock(key: &AlertKey, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The ids among `ids` already stored.
pub async fn known(ids: &[String], tx: &mut PgConnection) -> Result<HashSet<String>, sqlx::Error> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT alert_id FROM alerts WHERE alert_id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// `key`'s episode openings raised in `(from_ms, to_ms)`, in decision
/// order, its held count and its next sequence number.
pub async fn load(
    key: &AlertKey,
    from_ms: i64,
    to_ms: i64,
    tx: &mut PgConnection,
) -> Result<Loaded, sqlx::Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT round(extract(epoch FROM raised_at) * 1000)::bigint, state FROM alerts \
         WHERE kind = $1 AND entity = $2 AND metric = $3 AND state <> 'suppressed' \
         AND raised_at > to_timestamp($4 / 1000.0) AND raised_at < to_timestamp($5 / 1000.0) \
         ORDER BY seq",
    )
    .bind(&key.kind)
    .bind(&key.entity)
    .bind(&key.metric)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(&mut *tx)
    .await?;
    let openings = rows
        .into_iter()
        .filter_map(|(raised_at_ms, state)| {
            State::from_name(&state).map(|state| Opening {
                raised_at_ms,
                state,
            })
        })
        .collect();
    let (last_seq, held): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(max(seq), 0), \
                count(*) FILTER (WHERE state = 'flapping' AND seq > COALESCE(n.last, 0)) \
         FROM alerts, (SELECT max(seq) AS last FROM alerts WHERE kind = $1 AND entity = $2 \
                       AND metric = $3 AND state = 'notified') n \
         WHERE kind = $1 AND entity = $2 AND metric = $3",
    )
    .bind(&key.kind)
    .bind(&key.entity)
    .bind(&key.metric)
    .fetch_one(&mut *tx)
    .await?;
    Ok(Loaded {
        history: KeyHistory { openings, held },
        next_seq: last_seq + 1,
    })
}

/// Stores a decided alert, unpublished; a stored id is kept as it is.
pub async fn insert(
    alert: &Alert,
    state: State,
    held: i64,
    seq: i64,
    tx: &mut PgConnection,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alerts (alert_id, source_id, kind, entity, site, service, metric, \
             severity, raised_at, summary, state, held, seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9 / 1000.0), $10, $11, $12, $13) \
         ON CONFLICT (alert_id) DO NOTHING",
    )
    .bind(&alert.alert_id)
    .bind(&alert.source_id)
    .bind(&alert.kind)
    .bind(&alert.entity)
    .bind(&alert.site)
    .bind(&alert.service)
    .bind(&alert.metric)
    .bind(&alert.severity)
    .bind(alert.raised_at_ms)
    .bind(&alert.summary)
    .bind(state.as_str())
    .bind(held)
    .bind(seq)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A stored alert waiting for publication, with its state and held count.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The alert as published on `alerts`.
    pub alert: Alert,
    /// Its state.
    pub state: State,
    /// Flapping episodes held before it, when it is notified.
    pub held: i64,
}

type AlertRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
);

/// Every alert not yet acknowledged by the broker, in decision order per key.
pub async fn unpublished(tx: &mut PgConnection) -> Result<Vec<Pending>, sqlx::Error> {
    let rows: Vec<AlertRow> = sqlx::query_as(
        "SELECT alert_id, source_id, kind, entity, site, service, metric, severity, \
             round(extract(epoch FROM raised_at) * 1000)::bigint, summary, state, held \
         FROM alerts WHERE NOT published ORDER BY kind, entity, metric, seq",
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let state = State::from_name(&r.10)?;
            Some(Pending {
                alert: Alert {
                    alert_id: r.0,
                    source_id: r.1,
                    kind: r.2,
                    entity: r.3,
                    site: r.4,
                    service: r.5,
                    metric: r.6,
                    severity: r.7,
                    raised_at_ms: r.8,
                    summary: r.9,
                },
                state,
                held: r.11,
            })
        })
        .collect())
}
