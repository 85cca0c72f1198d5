//! The database handle: opening it (SQLite in WAL mode, or PostgreSQL), migrating it, and the
//! error type every store call returns.

use std::time::Duration;

use loop_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

/// Errors callers can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {url}: {source}")]
    Open {
        /// The URL with any password removed.
        url: String,
        #[source]
        source: DbErr,
    },
    #[error("cannot migrate database: {0}")]
    Migrate(#[source] DbErr),
    #[error("cannot create directory {path} for the database: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not found: {0}")]
    NotFound(String),
    /// The write would take what belongs to another (a branch name of another thread).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

/// The database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

/// How long a SQLite writer waits for another before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if let Some(dir) = sqlite_file(url).and_then(|path| std::path::Path::new(path).parent())
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
        if url.starts_with("sqlite:") && url.contains(":memory:") {
            // Every pooled connection to `:memory:` would be its own empty database.
            options.max_connections(1).min_connections(1);
        }
        let db = Database::connect(options)
            .await
            .map_err(|source| StoreError::Open {
                url: redact_url(url),
                source,
            })?;
        Migrator::up(&db, None).await.map_err(StoreError::Migrate)?;
        Ok(Store { db })
    }

    /// Migrations that are known but not yet applied (for `loop doctor`).
    pub async fn pending_migrations(url: &str) -> Result<Vec<String>, StoreError> {
        let db = Database::connect(url)
            .await
            .map_err(|source| StoreError::Open {
                url: redact_url(url),
                source,
            })?;
        let pending = Migrator::get_pending_migrations(&db).await?;
        Ok(pending.iter().map(|m| m.name().to_owned()).collect())
    }

    /// The underlying connection, for the store's own submodules.
    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Which backend this is, for diagnostics.
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            sea_orm::DatabaseBackend::Sqlite => "sqlite",
            sea_orm::DatabaseBackend::Postgres => "postgres",
            _ => "other",
        }
    }

    /// Names of the tables in the schema (for tests and `loop doctor`).
    pub async fn table_names(&self) -> Result<Vec<String>, StoreError> {
        use sea_orm::{ConnectionTrait, Statement};
        let sql = match self.db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
            }
            _ => "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1",
        };
        let rows = self
            .db
            .query_all_raw(Statement::from_string(self.db.get_database_backend(), sql))
            .await?;
        let mut names = Vec::new();
        for row in rows {
            names.push(row.try_get::<String>("", "name")?);
        }
        Ok(names)
    }
}

/// The file path of a `sqlite://PATH?...` URL, if it names a file.
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// A URL fit for logs: the password (if any) replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[tokio::test]
    async fn migrations_create_the_schema_on_every_backend() {
        for db in crate::test_support::TestDb::all().await {
            let store = db.store();
            let tables = store.table_names().await.expect("tables");
            for table in [
                "channels",
                "sessions",
                "inbox",
                "runs",
                "outbox",
                "scheduled_tasks",
                "approvals",
                "gate_audit",
                "memories",
                "channel_grants",
                "project_trust",
                "project_trust_notices",
            ] {
                assert!(
                    tables.iter().any(|t| t == table),
                    "{}: missing {table} in {tables:?}",
                    db.backend()
                );
            }
            // Opening again is a no-op: migrations are idempotent.
            Store::open(db.url()).await.expect("reopen");
            assert!(
                Store::pending_migrations(db.url())
                    .await
                    .expect("pending")
                    .is_empty()
            );
        }
    }
}
