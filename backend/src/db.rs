//! Opening the database and bringing its schema up to date.

use std::time::Duration;

use pepeunit_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::postgres::PgSslMode;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::config::{Config, SqliteSync};

/// The database could not be opened or migrated; the message names the setting to look at.
#[derive(Debug, thiserror::Error)]
pub enum DbStartError {
    #[error(
        "cannot open the database set by database_url (PEPEUNIT_DATABASE_URL): {0}. \
         Check the URL, that the server is reachable and that the file is a Pepeunit SQLite database"
    )]
    Open(String),
    #[error(
        "cannot migrate the database set by database_url (PEPEUNIT_DATABASE_URL): {0}. \
         Is it a Pepeunit database, written by this or an older version?"
    )]
    Migrate(String),
    #[error("cannot create the data directory data_dir (PEPEUNIT_DATA_DIR) {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// Opens the configured database with settings suited to its engine.
pub async fn connect(config: &Config) -> Result<DatabaseConnection, DbStartError> {
    let url = config.effective_database_url();
    if config.database_url.is_none() {
        crate::secrets::create_private_dir(&config.data_dir).map_err(|source| {
            DbStartError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            }
        })?;
    }
    let synchronous = match config.database_sqlite_synchronous {
        SqliteSync::Full => SqliteSynchronous::Full,
        SqliteSync::Normal => SqliteSynchronous::Normal,
    };
    let mut options = ConnectOptions::new(url.expose().to_owned());
    options
        .max_connections(config.database_max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        // WAL lets readers run beside the one writer; `synchronous` is the configured durability (see
        // SqliteSync); busy_timeout makes concurrent writers wait instead of failing with SQLITE_BUSY.
        .map_sqlx_sqlite_opts(move |opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    if !asks_for_tls(url.expose()) {
        // sqlx's default `prefer` negotiates TLS with any server that offers it, and on a local or
        // private network that costs most of the throughput (each batch spans several TLS records). TLS is
        // used when the URL (or PGSSLMODE) asks for it.
        options.map_sqlx_postgres_opts(|opts| opts.ssl_mode(PgSslMode::Disable));
    }
    let db = Database::connect(options)
        .await
        .map_err(|e| DbStartError::Open(strip_credentials(&e.to_string(), url.expose())))?;
    // SQLite opens lazily: a corrupt file only shows on the first query, so ask one now.
    db.ping()
        .await
        .map_err(|e| DbStartError::Open(strip_credentials(&e.to_string(), url.expose())))?;
    Ok(db)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbStartError> {
    Migrator::up(db, None)
        .await
        .map_err(|e| DbStartError::Migrate(e.to_string()))
}

/// Which engine a connection talks to, for the few places that differ.
pub fn backend_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        DbBackend::Sqlite => "sqlite",
        DbBackend::Postgres => "postgres",
        _ => "other",
    }
}

/// Whether a PostgreSQL URL (or the environment) chooses its TLS mode.
fn asks_for_tls(url: &str) -> bool {
    std::env::var_os("PGSSLMODE").is_some()
        || url::Url::parse(url).is_ok_and(|url| {
            url.query_pairs()
                .any(|(key, _)| key == "sslmode" || key == "ssl-mode")
        })
}

fn strip_credentials(message: &str, url: &str) -> String {
    message.replace(url, "<database_url>")
}

/// Starts a transaction that will write. On SQLite it takes the write lock at `BEGIN IMMEDIATE`: a
/// deferred transaction that reads first and writes later fails with SQLITE_BUSY_SNAPSHOT (517) when
/// another writer committed in between, and busy_timeout cannot wait that out. PostgreSQL ignores the mode.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// Whether `error` is another writer in the way, so the same work can succeed if simply tried again:
/// SQLite's SQLITE_BUSY (and its extended codes, e.g. BUSY_SNAPSHOT), PostgreSQL's deadlock_detected
/// (40P01: it aborts one of two transactions that lock rows in opposite orders, e.g. a rollout wave and an
/// ingestion batch with state reports) and serialization_failure (40001).
pub fn is_busy(error: &DbErr) -> bool {
    let sqlx_error = match error {
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    let Some(database_error) = sqlx_error.as_database_error() else {
        return false;
    };
    if let Some(postgres) =
        database_error.try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>()
    {
        return matches!(postgres.code(), "40P01" | "40001");
    }
    match database_error.code() {
        // The primary code is the low byte of the extended one.
        Some(code) => code.parse::<i32>().is_ok_and(|code| code & 0xff == 5),
        None => false,
    }
}

/// Runs `work` again, backing off, while the database reports another writer in the way ([`is_busy`], at
/// most ten times). Only for
/// work that keeps its state in the database and can start over after a rolled-back transaction.
pub async fn retry_busy<T, F, Fut>(what: &str, mut work: F) -> crate::error::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<T>>,
{
    let mut attempts = 0u64;
    loop {
        match work().await {
            Err(crate::error::Error::Database(error)) if is_busy(&error) && attempts < 10 => {
                attempts += 1;
                tracing::info!(%error, attempts, "database busy; {what} again");
                tokio::time::sleep(Duration::from_millis(50 * attempts)).await;
            }
            other => return other,
        }
    }
}
