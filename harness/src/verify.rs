//! Correctness of a run: every result table of the fleet reduced to a row
//! count and a checksum that are the same whatever the timing, so that the
//! results of a run can be compared with the committed expected outputs
//! (`fixtures/expected/pipeline.json`) and with the results of every other
//! strategy.
//!
//! A table's checksum is the sha256 of its rows in a canonical text form,
//! sorted: every column as PostgreSQL prints it in UTC, except that
//! floating-point numbers (columns and numbers inside JSON) are rounded to
//! [`SIGNIFICANT_DIGITS`] significant digits, because sums computed in a
//! different order may differ in their last bits. Columns that record when a
//! row was written (wall-clock time) are left out.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

/// Significant digits floating-point values are compared with.
pub const SIGNIFICANT_DIGITS: usize = 9;

/// The fleet's result tables, with the columns left out of the checksum
/// and why.
pub const RESULT_TABLES: &[(&str, &[&str])] = &[
    // ingested_at: when the ingestor wrote the row (wall clock).
    ("measurements", &["ingested_at"]),
    // written_at: when the KPI worker wrote the window (wall clock).
    ("kpi_windows", &["written_at"]),
    ("anomaly_models", &[]),
    ("anomalies", &[]),
    ("forecasts", &[]),
    // summary: text for people whose numbers are printed to one decimal; a
    // last-bit difference in a mean (sums in another order) can flip that
    // rounding. The numbers themselves are compared in `anomalies`.
    ("alerts", &["summary"]),
    ("incidents", &[]),
    ("incident_alerts", &[]),
    ("sla_reports", &[]),
    ("measurements_hourly", &[]),
];

/// Errors reading or comparing results.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A query failed.
    #[error("reading result table {table}: {source}")]
    Query {
        /// The table.
        table: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The expected outputs could not be read or written.
    #[error("{operation} expected outputs {path}: {problem}")]
    File {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        problem: String,
    },
}

/// A table reduced to what is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    /// Rows in the table.
    pub rows: u64,
    /// sha256 of the sorted canonical rows.
    pub sha256: String,
}

/// Every result table's digest, by table name.
pub type Digests = BTreeMap<String, TableDigest>;

/// A table whose digest differs from the expected one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// The table.
    pub table: String,
    /// What was expected (`None`: the table is not in the expected outputs).
    pub expected: Option<TableDigest>,
    /// What was found (`None`: the table was not read).
    pub actual: Option<TableDigest>,
}

/// Rounds `value` to [`SIGNIFICANT_DIGITS`] significant digits, as text.
pub fn canonical_float(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    if !value.is_finite() {
        return value.to_string();
    }
    format!("{:.*e}", SIGNIFICANT_DIGITS - 1, value)
}

/// A JSON value with every number written by [`canonical_float`] and object
/// keys sorted.
fn canonical_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => canonical_float(f),
            _ => n.to_string(),
        },
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(canonical_json)
                .collect::<Vec<_>>()
                .join(",")
        ),
        serde_json::Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k:?}:{}", canonical_json(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        other => other.to_string(),
    }
}

/// The digest of one table.
pub async fn digest_table(
    pool: &PgPool,
    table: &str,
    skip: &[&str],
) -> Result<TableDigest, VerifyError> {
    let lines = canonical_rows(pool, table, skip).await?;
    let mut hash = Sha256::new();
    for line in &lines {
        hash.update(line.as_bytes());
        hash.update(b"\n");
    }
    Ok(TableDigest {
        rows: lines.len() as u64,
        sha256: hex::encode(hash.finalize()),
    })
}

/// The rows of one table in the canonical text form the digest hashes,
/// sorted: what to print when a digest differs.
pub async fn canonical_rows(
    pool: &PgPool,
    table: &str,
    skip: &[&str],
) -> Result<Vec<String>, VerifyError> {
    let fail = |source| VerifyError::Query {
        table: table.to_string(),
        source,
    };
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(fail)?;
    let columns: Vec<(String, String)> = columns
        .into_iter()
        .filter(|(name, _)| !skip.contains(&name.as_str()))
        .collect();
    if columns.is_empty() {
        return Err(fail(sqlx::Error::RowNotFound));
    }
    let select: Vec<String> = columns
        .iter()
        .map(|(name, kind)| match kind.as_str() {
            "timestamp with time zone" => {
                format!("to_char(\"{name}\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS')")
            }
            _ => format!("\"{name}\"::text"),
        })
        .collect();
    let query = format!("SELECT {} FROM \"{table}\"", select.join(", "));
    let rows = sqlx::query(&query).fetch_all(pool).await.map_err(fail)?;
    let mut lines: Vec<String> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| {
                    let text: Option<String> = row.get(i);
                    match (text, kind.as_str()) {
                        (None, _) => "NULL".to_string(),
                        (Some(t), "double precision" | "real") => {
                            t.parse::<f64>().map(canonical_float).unwrap_or(t)
                        }
                        (Some(t), "jsonb" | "json") => serde_json::from_str(&t)
                            .map(|v| canonical_json(&v))
                            .unwrap_or(t),
                        (Some(t), _) => t,
                    }
                })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect();
    lines.sort();
    Ok(lines)
}

/// The columns of `table` left out of its digest.
pub fn skipped_columns(table: &str) -> &'static [&'static str] {
    RESULT_TABLES
        .iter()
        .find(|(name, _)| *name == table)
        .map(|(_, skip)| *skip)
        .unwrap_or(&[])
}

/// The digests of every result table.
pub async fn digest_results(pool: &PgPool) -> Result<Digests, VerifyError> {
    let mut digests = Digests::new();
    for (table, skip) in RESULT_TABLES {
        digests.insert(table.to_string(), digest_table(pool, table, skip).await?);
    }
    Ok(digests)
}

/// The tables whose digests differ between `expected` and `actual`.
pub fn compare(expected: &Digests, actual: &Digests) -> Vec<Mismatch> {
    let mut tables: Vec<&String> = expected.keys().chain(actual.keys()).collect();
    tables.sort();
    tables.dedup();
    tables
        .into_iter()
        .filter(|t| expected.get(*t) != actual.get(*t))
        .map(|t| Mismatch {
            table: t.clone(),
            expected: expected.get(t).cloned(),
            actual: actual.get(t).cloned(),
        })
        .collect()
}

/// The expected outputs of the fixture, as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedOutputs {
    /// How the digests were made, for readers of the file.
    pub about: String,
    /// Digest of every result table.
    pub tables: Digests,
}

impl ExpectedOutputs {
    /// Reads the expected outputs from `path`.
    pub fn load(path: &Path) -> Result<Self, VerifyError> {
        let fail = |problem: String| VerifyError::File {
            operation: "reading",
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| fail(e.to_string()))
    }

    /// Writes `tables` as the expected outputs at `path`.
    pub fn save(path: &Path, tables: &Digests) -> Result<(), VerifyError> {
        let outputs = Self {
            about: format!(
                "Per result table of the fleet, run on fixtures/telemetry.jsonl: the row count and \
                 the sha256 of the sorted rows, floats rounded to {SIGNIFICANT_DIGITS} significant \
                 digits (see harness/src/verify.rs)."
            ),
            tables: tables.clone(),
        };
        let text = serde_json::to_string_pretty(&outputs).expect("digests serialise") + "\n";
        std::fs::write(path, text).map_err(|e| VerifyError::File {
            operation: "writing",
            path: path.display().to_string(),
            problem: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_that_differ_in_their_last_bits_print_the_same() {
        let a = 0.1 + 0.2 + 0.3;
        let b = 0.3 + 0.2 + 0.1;
        assert_ne!(a, b);
        assert_eq!(canonical_float(a), canonical_float(b));
        assert_ne!(canonical_float(1.0), canonical_float(1.000001));
    }

    #[test]
    fn json_numbers_are_rounded_and_keys_sorted() {
        let one: serde_json::Value =
            serde_json::from_str(r#"{"b":0.6000000000000001,"a":[1,2.5]}"#).unwrap();
        let two: serde_json::Value = serde_json::from_str(r#"{"a":[1,2.5],"b":0.6}"#).unwrap();
        assert_eq!(canonical_json(&one), canonical_json(&two));
    }

    #[test]
    fn a_table_with_another_checksum_is_a_mismatch() {
        let digest = |rows, sha: &str| TableDigest {
            rows,
            sha256: sha.into(),
        };
        let expected = Digests::from([("a".into(), digest(1, "x")), ("b".into(), digest(2, "y"))]);
        let actual = Digests::from([("a".into(), digest(1, "x")), ("b".into(), digest(2, "z"))]);
        let mismatches = compare(&expected, &actual);
        assert_eq!(mismatches.len(), 1);
        assert_eq!(mismatches[0].table, "b");
    }
}
