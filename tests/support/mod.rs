//! Helpers the process tests share: the workspace's service binaries, each on ports of its own,
//! its log (standard error) in a file, never in a pipe nobody reads (a full pipe blocks the
//! service's logging).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A service binary of the workspace (`cargo test --workspace` builds them beside ours), with
/// a clean environment: only `PATH`, warnings logged, fixed prices, no rate limit.
pub fn service(name: &str) -> Command {
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

/// A port on 127.0.0.1 nothing listens on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three free ports (write, read, projector), distinct.
pub fn free_ports() -> [u16; 3] {
    let listeners: Vec<_> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    [0, 1, 2].map(|i| listeners[i].local_addr().unwrap().port())
}

/// A running service process, killed when dropped; its log goes to a file.
pub struct Running {
    /// The process.
    pub child: Child,
    port: u16,
    log: Log,
}

/// A log file of one process, removed when dropped.
struct Log(PathBuf);

impl Drop for Log {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Starts `command`, answering HTTP on `port`, its standard error into a log file of its
    /// own.
    pub fn spawn(mut command: Command, name: &str, port: u16) -> Running {
        let log = Log(std::env::temp_dir().join(format!("bo-{name}-{}.log", uuid::Uuid::new_v4())));
        let file = std::fs::File::create(&log.0).unwrap();
        let child = command.stderr(file).spawn().unwrap();
        Running { child, port, log }
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log.0).unwrap_or_default()
    }

    /// A URL of its HTTP port.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its `/metrics`, as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until `/readyz` answers 200, or fails the test with the process's exit and log.
    pub async fn ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the process exited at start-up: {status}: {}", self.log());
            }
            if let Ok(answer) = reqwest::get(self.url("/readyz")).await {
                if answer.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never ready: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a process that must refuse to start: its exit code and what it logged.
    pub async fn refused(mut self) -> (Option<i32>, String) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "it started; it must refuse: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A service binary on `url` with `env`, on the three ports (write, read, projector); its own
/// HTTP port is the one of its kind.
pub fn spawn_service(name: &str, url: &str, env: &[(&str, &str)], port: [u16; 3]) -> Running {
    let mut command = service(name);
    command
        .env("DATABASE_URL", url)
        .env("WRITE_ADDR", format!("127.0.0.1:{}", port[0]))
        .env("READ_ADDR", format!("127.0.0.1:{}", port[1]))
        .env("PROJECTOR_ADDR", format!("127.0.0.1:{}", port[2]))
        .envs(env.iter().copied());
    let own = match name {
        "api-write" => port[0],
        "api-read" => port[1],
        _ => port[2],
    };
    Running::spawn(command, name, own)
}
