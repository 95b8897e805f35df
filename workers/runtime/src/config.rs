//! Worker configuration from environment variables, validated at start
//! with errors that name the variable and what is wrong with it.

use std::net::SocketAddr;
use std::time::Duration;

/// A variable is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {variable}: {problem}")]
pub struct ConfigError {
    /// The variable's name.
    pub variable: &'static str,
    /// What is wrong, with the value seen where there is one.
    pub problem: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything a worker reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// `KAFKA_BROKERS`: bootstrap servers, `host:port[,host:port]`.
    pub kafka_brokers: String,
    /// `DATABASE_URL`: `postgres://user:password@host:port/db`.
    pub database_url: String,
    /// `KAFKA_GROUP_ID`: consumer group (default: the worker's name).
    pub group_id: String,
    /// `KAFKA_GROUP_INSTANCE_ID`: static group membership (KIP-345): a
    /// restarted worker with the same id takes its partitions back at once.
    pub group_instance_id: Option<String>,
    /// `KAFKA_PARTITIONS`: partitions of topics the worker creates (default 3).
    pub partitions: i32,
    /// `BATCH_MAX_EVENTS`: most events per batch (default 500).
    pub batch_max_events: usize,
    /// `BATCH_MAX_WAIT_MS`: longest wait to fill a batch (default 200).
    pub batch_max_wait: Duration,
    /// `METRICS_ADDR`: where `/metrics` and `/healthz` listen (default 0.0.0.0:9100).
    pub metrics_addr: SocketAddr,
    /// `DB_POOL_SIZE`: PostgreSQL connections (default 4).
    pub db_pool_size: u32,
    /// `LOG_FORMAT`: `text` or `json` (default text).
    pub log_format: LogFormat,
}

impl RuntimeConfig {
    /// Reads the configuration of worker `name` from the process environment.
    pub fn from_env(name: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(name, |key| std::env::var(key).ok())
    }

    /// Reads the configuration through `lookup`, for tests and embedding.
    pub fn from_lookup(
        name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let kafka_brokers = required(&lookup, "KAFKA_BROKERS")?;
        if kafka_brokers.split(',').any(|b| !b.contains(':')) {
            return Err(ConfigError {
                variable: "KAFKA_BROKERS",
                problem: format!("'{kafka_brokers}' is not a list of host:port"),
            });
        }
        Ok(Self {
            kafka_brokers,
            database_url: database_url(&lookup)?,
            group_id: lookup("KAFKA_GROUP_ID").unwrap_or_else(|| name.to_string()),
            group_instance_id: lookup("KAFKA_GROUP_INSTANCE_ID").filter(|id| !id.trim().is_empty()),
            partitions: env_number(&lookup, "KAFKA_PARTITIONS", 3, 1..=1024)?,
            batch_max_events: env_number(&lookup, "BATCH_MAX_EVENTS", 500, 1..=100_000)?,
            batch_max_wait: Duration::from_millis(env_number(
                &lookup,
                "BATCH_MAX_WAIT_MS",
                200,
                1..=60_000,
            )?),
            metrics_addr: metrics_addr(&lookup)?,
            db_pool_size: env_number(&lookup, "DB_POOL_SIZE", 4, 1..=64)?,
            log_format: log_format(&lookup)?,
        })
    }
}

/// What a periodic worker (one that reads the database on a timer rather
/// than a topic) reads from its environment: no Kafka settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodicConfig {
    /// `DATABASE_URL`: `postgres://user:password@host:port/db`.
    pub database_url: String,
    /// `TICK_INTERVAL_MS`: pause between two rounds of work (default 10000).
    pub interval: Duration,
    /// `METRICS_ADDR`: where `/metrics` and `/healthz` listen (default 0.0.0.0:9100).
    pub metrics_addr: SocketAddr,
    /// `DB_POOL_SIZE`: PostgreSQL connections (default 4).
    pub db_pool_size: u32,
    /// `LOG_FORMAT`: `text` or `json` (default text).
    pub log_format: LogFormat,
}

impl PeriodicConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads the configuration through `lookup`, for tests and embedding.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            database_url: database_url(&lookup)?,
            interval: Duration::from_millis(env_number(
                &lookup,
                "TICK_INTERVAL_MS",
                10_000,
                10..=86_400_000,
            )?),
            metrics_addr: metrics_addr(&lookup)?,
            db_pool_size: env_number(&lookup, "DB_POOL_SIZE", 4, 1..=64)?,
            log_format: log_format(&lookup)?,
        })
    }
}

/// The non-empty value of `variable`, or an error saying it is not set.
fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<String, ConfigError> {
    lookup(variable)
        .filter(|value| !value.trim().is_empty())
        .ok_or(ConfigError {
            variable,
            problem: "is not set".into(),
        })
}

/// `DATABASE_URL`, required, of the postgres scheme.
fn database_url(lookup: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let url = required(lookup, "DATABASE_URL")?;
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(ConfigError {
            variable: "DATABASE_URL",
            problem: "must start with postgres:// or postgresql://".into(),
        });
    }
    Ok(url)
}

/// `METRICS_ADDR`, default `0.0.0.0:9100`.
fn metrics_addr(lookup: &impl Fn(&str) -> Option<String>) -> Result<SocketAddr, ConfigError> {
    let text = lookup("METRICS_ADDR").unwrap_or_else(|| "0.0.0.0:9100".to_string());
    text.parse().map_err(|e| ConfigError {
        variable: "METRICS_ADDR",
        problem: format!("'{text}' is not an address like 0.0.0.0:9100: {e}"),
    })
}

/// `LOG_FORMAT`, `text` (default) or `json`.
fn log_format(lookup: &impl Fn(&str) -> Option<String>) -> Result<LogFormat, ConfigError> {
    match lookup("LOG_FORMAT").as_deref().unwrap_or("text") {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(ConfigError {
            variable: "LOG_FORMAT",
            problem: format!("'{other}' is neither text nor json"),
        }),
    }
}

/// Reads the whole number `variable` through `lookup`: `default` when unset,
/// an error naming the variable when it does not parse or is out of `range`.
pub fn env_number<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(text) = lookup(variable) else {
        return Ok(default);
    };
    let value: T = text.trim().parse().map_err(|_| ConfigError {
        variable,
        problem: format!("'{text}' is not a whole number"),
    })?;
    if !range.contains(&value) {
        return Err(ConfigError {
            variable,
            problem: format!("{value} is outside {}..={}", range.start(), range.end()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<RuntimeConfig, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RuntimeConfig::from_lookup("kpi-worker", |key| env.get(key).cloned())
    }

    const MINIMAL: [(&str, &str); 2] = [
        ("KAFKA_BROKERS", "broker:9092"),
        ("DATABASE_URL", "postgres://u:p@db:5432/fleet"),
    ];

    #[test]
    fn the_two_required_variables_are_enough() {
        let config = config(&MINIMAL).unwrap();
        assert_eq!(config.group_id, "kpi-worker");
        assert_eq!(config.partitions, 3);
        assert_eq!(config.batch_max_wait, Duration::from_millis(200));
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn a_group_instance_id_makes_the_worker_a_static_member() {
        assert_eq!(config(&MINIMAL).unwrap().group_instance_id, None);
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("KAFKA_GROUP_INSTANCE_ID", "kpi-worker-0"));
        let config = config(&pairs).unwrap();
        assert_eq!(config.group_instance_id.as_deref(), Some("kpi-worker-0"));
    }

    #[test]
    fn a_missing_broker_list_is_named() {
        let err = config(&MINIMAL[1..]).unwrap_err();
        assert_eq!(err.variable, "KAFKA_BROKERS");
        assert!(err.to_string().contains("is not set"));
    }

    #[test]
    fn a_number_out_of_range_names_the_variable_and_value() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("KAFKA_PARTITIONS", "0"));
        let err = config(&pairs).unwrap_err();
        assert_eq!(err.variable, "KAFKA_PARTITIONS");
        assert!(err.problem.contains('0'), "{err}");
    }

    #[test]
    fn a_word_where_a_number_belongs_is_rejected() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("BATCH_MAX_EVENTS", "many"));
        let err = config(&pairs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable BATCH_MAX_EVENTS: 'many' is not a whole number"
        );
    }

    #[test]
    fn a_periodic_worker_needs_no_kafka_settings() {
        let env: HashMap<&str, &str> = HashMap::from([MINIMAL[1], ("TICK_INTERVAL_MS", "250")]);
        let config = PeriodicConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(config.interval, Duration::from_millis(250));
        let err = PeriodicConfig::from_lookup(|_| None).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
    }

    #[test]
    fn a_database_url_of_another_scheme_is_rejected() {
        let err = config(&[MINIMAL[0], ("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
    }
}
