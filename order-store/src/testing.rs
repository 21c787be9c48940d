//! Test support (feature `test-support`): a fresh PostgreSQL database per test, so tests run
//! in parallel against the real server without seeing each other's data.

use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;

/// The server tests use; `TEST_POSTGRES_URL` overrides it (any database on it: used to create
/// and drop the per-test ones).
fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database created for one test and dropped when this value is dropped.
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// Creates an empty database. Panics with a clear message if PostgreSQL is not reachable:
    /// a test that needs it fails rather than skip (`.ci/run` starts it).
    pub async fn create() -> TestDb {
        let admin = admin_url();
        let name = format!("bo_test_{}", uuid::Uuid::new_v4().simple());
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is not reachable at {admin} ({e}); start it (see .ci/run)")
            });
        pool.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        pool.close().await;
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        TestDb {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&admin_url())
                    .await
                    .ok()?;
                pool.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .ok()?;
                pool.close().await;
                Some(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: test database {} was not dropped", self.name);
        }
    }
}
