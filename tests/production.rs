//! What a production year brings, through the real service processes (`api-write`, `projector`)
//! against the real PostgreSQL and RabbitMQ: a database whose default isolation is not ours,
//! a forged message on the queue.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use order_store::testing::TestDb;
use serde_json::json;

/// A service binary of the workspace (`cargo test --workspace` builds them beside ours).
fn service(name: &str) -> Command {
    let path: PathBuf = std::path::Path::new(env!("CARGO_BIN_EXE_buy-orders"))
        .parent()
        .unwrap()
        .join(name);
    assert!(
        path.exists(),
        "{path:?} missing: run `cargo test --workspace`"
    );
    let mut command = Command::new(path);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("PRICE_SOURCE", "fixed:USD=50000,EUR=40000,GBP=30000")
        .env("RATE_LIMIT_PER_S", "0")
        .stdout(Stdio::null());
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running service process, killed when dropped; its log (standard error) goes to a file.
struct Running {
    child: Child,
    port: u16,
    log: tempfile_path::Log,
}

mod tempfile_path {
    /// A log file of one process, removed when dropped.
    pub struct Log(pub std::path::PathBuf);

    impl Log {
        pub fn new(name: &str) -> Log {
            Log(std::env::temp_dir().join(format!("bo-{name}-{}.log", uuid::Uuid::new_v4())))
        }
    }

    impl Drop for Log {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Starts `command`, its standard error into a log file of its own.
    fn spawn(mut command: Command, name: &str, port: u16) -> Running {
        let log = tempfile_path::Log::new(name);
        let file = std::fs::File::create(&log.0).unwrap();
        let child = command.stderr(file).spawn().unwrap();
        Running { child, port, log }
    }

    /// What the process has logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log.0).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/readyz` answers 200, or fails the test with the process's exit.
    async fn ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the process exited at start-up: {status}");
            }
            if let Ok(answer) = reqwest::get(self.url("/readyz")).await {
                if answer.status() == 200 {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `api-write` on `db`, with `extra` environment.
fn api_write(db: &TestDb, extra: &[(&str, &str)]) -> Running {
    let port = free_port();
    let mut command = service("api-write");
    command
        .env("DATABASE_URL", db.url())
        .env("WRITE_ADDR", format!("127.0.0.1:{port}"))
        .envs(extra.iter().copied());
    Running::spawn(command, "api-write", port)
}

async fn put_order(client: &reqwest::Client, writer: &Running, key: &str) -> reqwest::Response {
    let body = json!({"currency": "USD", "amount": "10.00",
                      "idempotence_key": uuid::Uuid::new_v4().to_string()});
    client
        .put(writer.url("/buy_order"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// A database whose default isolation is `serializable` (some managed platforms and DBAs set
/// it): two writers started at once both come up, and 200 concurrent orders on them are all
/// placed, no commit failing on the way. Every session sets READ COMMITTED itself; before, the
/// second writer could exit at start-up, and contended batches failed with 40001 ("could not
/// serialize access", each batch's orders then retried: waves of 503 under load).
#[tokio::test]
async fn a_serializable_database_default_changes_nothing() {
    let db = TestDb::create().await;
    let key = db.client_key("isolated", false).await;
    let admin = sqlx::PgPool::connect(db.url()).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&admin)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'"
    ))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    // a new session of the database's now runs serializable unless it says otherwise
    let plain = sqlx::PgPool::connect(db.url()).await.unwrap();
    let level: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&plain)
        .await
        .unwrap();
    assert_eq!(level, "serializable");
    plain.close().await;

    let mut writers = [api_write(&db, &[]), api_write(&db, &[])];
    for writer in &mut writers {
        writer.ready().await;
    }
    let client = reqwest::Client::new();
    let orders = (0..200).map(|i| put_order(&client, &writers[i % 2], &key));
    let answers = futures::future::join_all(orders).await;
    for answer in answers {
        let status = answer.status();
        assert_eq!(status, 200, "{}", answer.text().await.unwrap());
    }
    for writer in &writers {
        let log = writer.log();
        assert!(!log.contains("could not serialize"), "{log}");
    }
}
