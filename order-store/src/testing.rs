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

/// A TCP proxy in front of PostgreSQL that a test can cut and restore: an outage of the
/// database as the application sees it, without stopping the server other tests share.
pub struct OutageProxy {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
}

impl OutageProxy {
    /// Starts a proxy on 127.0.0.1 (an ephemeral port) forwarding to `target`.
    pub async fn start(target: std::net::SocketAddr) -> OutageProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let (flag, cut_rx) = (up.clone(), cuts.subscribe());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused, as far as the client can tell
                }
                let mut cut = cut_rx.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {} // both sockets dropped: the connection dies
                    }
                });
            }
        });
        OutageProxy { addr, up, cuts }
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}{}/{path}", self.addr)
    }

    /// The database goes away: open connections die, new ones are refused.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// The database is back.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
