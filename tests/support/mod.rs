//! Helpers the process tests share: the service binaries spawned on ports of their own.
#![allow(dead_code)]

use std::time::Duration;

/// Three free ports (write, read, projector).
pub fn free_ports() -> [u16; 3] {
    let listeners: Vec<_> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    [0, 1, 2].map(|i| listeners[i].local_addr().unwrap().port())
}

/// A service process, its log in a file of its own (a pipe nobody reads until the end would
/// fill, and block the service writing its log).
pub struct Service {
    /// The process (killed when dropped).
    pub child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl Service {
    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A service binary on `url` with `env`, on the three ports (write, read, projector).
pub fn spawn_service(name: &str, url: &str, env: &[(&str, &str)], port: [u16; 3]) -> Service {
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_buy-orders"))
        .parent()
        .unwrap()
        .to_owned();
    let mut command = tokio::process::Command::new(dir.join(name));
    command
        .env("DATABASE_URL", url)
        .env_remove("READ_DATABASE_URL")
        .env_remove("AMQP_URL")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGSSLCERT")
        .env_remove("PGSSLKEY")
        .env(
            "PRICE_SOURCE",
            "fixed:USD=48478.88,EUR=41191.91,GBP=35330.89",
        )
        .env("WRITE_ADDR", format!("127.0.0.1:{}", port[0]))
        .env("READ_ADDR", format!("127.0.0.1:{}", port[1]))
        .env("PROJECTOR_ADDR", format!("127.0.0.1:{}", port[2]))
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    let log = std::env::temp_dir().join(format!(
        "bo-{name}-{}-{}.log",
        port[0],
        uuid::Uuid::new_v4().simple()
    ));
    command.stderr(std::fs::File::create(&log).expect("a log file"));
    Service {
        child: command.spawn().unwrap(),
        log,
    }
}

/// Waits for a service that must refuse to start: its exit code and what it logged.
pub async fn refused(name: &str, mut service: Service) -> (Option<i32>, String) {
    let status = tokio::time::timeout(Duration::from_secs(20), service.child.wait())
        .await
        .unwrap_or_else(|_| panic!("{name} started; it must refuse"))
        .unwrap();
    (status.code(), service.log())
}

/// Waits until the service answers its health check on `port`.
pub async fn healthy(name: &str, service: &mut Service, port: u16) {
    for _ in 0..150 {
        if let Ok(Some(status)) = service.child.try_wait() {
            panic!("{name} stopped ({status}): {}", service.log());
        }
        let answer = reqwest::get(format!("http://127.0.0.1:{port}/healthcheck")).await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never became healthy: {}", service.log());
}
