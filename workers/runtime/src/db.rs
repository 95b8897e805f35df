//! PostgreSQL: the connection pool and the fleet's schema, kept as sqlx
//! migrations in `workers/runtime/migrations`, the one place every worker's
//! tables are defined.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// The fleet's migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Errors opening the database or migrating it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be made.
    #[error("connecting to PostgreSQL at {address}: {source}")]
    Connect {
        /// The URL without its password.
        address: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migrating the fleet schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens a pool of `size` connections to `url`.
pub async fn connect(url: &str, size: u32) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|source| DbError::Connect {
            address: redact(url),
            source,
        })
}

/// Applies every pending migration; safe to run from several workers at once.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Marks the rows of `table` whose `key` is in `ids` as published (the
/// outbox flag) and empties `ids`; `table` and `key` are the caller's
/// constants, never input.
pub async fn mark_published(
    pool: &PgPool,
    table: &'static str,
    key: &'static str,
    ids: &mut Vec<String>,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "UPDATE {table} SET published = true WHERE {key} = ANY($1)"
    ))
    .bind(&*ids)
    .execute(pool)
    .await?;
    ids.clear();
    Ok(())
}

/// The URL with its password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://fleet:secret@db:5432/fleet"),
            "postgres://fleet:***@db:5432/fleet"
        );
        assert_eq!(redact("postgres://db/fleet"), "postgres://db/fleet");
    }
}
