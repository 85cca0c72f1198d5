//! Fresh databases for tests: one SQLite file in a temp dir, and one brand-new PostgreSQL
//! database per test when `LOOP_TEST_DATABASE_URL` is set.
//!
//! CI always sets `LOOP_TEST_DATABASE_URL`; without it the Postgres half fails unless the
//! developer opted out with `LOOP_TEST_SKIP_UNAVAILABLE=1`.

use sea_orm::{ConnectionTrait, Database, Statement};

use crate::connection::Store;

/// A database created for one test and dropped (Postgres) or deleted (SQLite) afterwards.
pub struct TestDb {
    url: String,
    store: Store,
    backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh SQLite database in a temp dir.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir for the test database");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("loop.db").display());
        let store = Store::open(&url).await.expect("open sqlite test database");
        TestDb {
            url,
            store,
            backend: "sqlite",
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` when the developer opted out.
    pub async fn postgres() -> Option<TestDb> {
        let Ok(admin_url) = std::env::var("LOOP_TEST_DATABASE_URL") else {
            assert!(
                skip_unavailable(),
                "LOOP_TEST_DATABASE_URL is not set: PostgreSQL tests need a server (.ci/run starts one); set LOOP_TEST_SKIP_UNAVAILABLE=1 to skip them locally"
            );
            eprintln!("skipping PostgreSQL half: LOOP_TEST_DATABASE_URL is not set");
            return None;
        };
        let name = format!("loop_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url)
            .await
            .expect("connect to LOOP_TEST_DATABASE_URL");
        admin
            .execute_raw(Statement::from_string(
                admin.get_database_backend(),
                format!("CREATE DATABASE {name}"),
            ))
            .await
            .expect("create test database");
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("LOOP_TEST_DATABASE_URL has no database path: {admin_url}"),
        };
        let store = Store::open(&url)
            .await
            .expect("open postgres test database");
        Some(TestDb {
            url,
            store,
            backend: "postgres",
            _dir: None,
        })
    }

    /// SQLite, plus PostgreSQL when available: run one story against each.
    pub async fn all() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite().await];
        dbs.extend(TestDb::postgres().await);
        dbs
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }
}

/// Whether the developer asked to skip tests whose external service is missing.
pub fn skip_unavailable() -> bool {
    std::env::var("LOOP_TEST_SKIP_UNAVAILABLE").is_ok_and(|v| v == "1")
}
