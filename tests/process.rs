//! The `buy-orders` binary as a user runs it: bad configuration stops it with a message naming
//! the variable, and SIGTERM or Ctrl-C (SIGINT) stop it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_buy-orders"));
    command.env("RUST_LOG", "warn");
    for variable in [
        "WRITE_ADDR",
        "READ_ADDR",
        "MAX_TOTAL_BTC",
        "PRICE_SOURCE",
        "PRICE_TTL_MS",
    ] {
        command.env_remove(variable);
    }
    command
}

#[test]
fn a_bad_value_stops_start_up_naming_the_variable() {
    for (variable, value) in [
        ("MAX_TOTAL_BTC", "lots"),
        ("MAX_TOTAL_BTC", "0.000000001"),
        ("WRITE_ADDR", "localhost"),
        ("READ_ADDR", "127.0.0.1:99999"),
        ("PRICE_SOURCE", "kraken"),
        ("PRICE_SOURCE", "fixed:USD=-1"),
        ("PRICE_TTL_MS", "soon"),
        ("PROJECTOR_BATCH", "0"),
        ("PG_SCHEMA", "Orders"),
        ("PG_SCHEMA", "pg_catalog"),
        ("PG_SCHEMA", "a;drop"),
    ] {
        let output = binary().env(variable, value).output().unwrap();
        assert!(!output.status.success(), "{variable}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
    }
}

/// No password reaches `--help` or an error message, for each binary and each URL variable.
#[test]
fn secrets_stay_out_of_help_and_errors() {
    // The services' binaries sit beside this package's (`cargo test --workspace` builds them).
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_buy-orders"))
        .parent()
        .unwrap();
    for name in ["buy-orders", "api-write", "api-read", "projector"] {
        let path = dir.join(name);
        assert!(
            path.exists(),
            "{path:?} missing: run `cargo test --workspace`"
        );
        let binary = path.to_str().unwrap();
        let help = Command::new(binary)
            .arg("--help")
            .env("DATABASE_URL", "postgres://app:S3cretPw@db:5432/orders")
            .env(
                "READ_DATABASE_URL",
                "postgres://app:S3cretPw@db:5432/orders",
            )
            .env("AMQP_URL", "amqp://app:S3cretPw@broker:5672/%2f")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains("DATABASE_URL"), "{binary}: {text}");
        assert!(
            !text.contains("S3cretPw"),
            "{binary} --help shows a password:\n{text}"
        );
        // Help offers only what works: verify-ca is refused, and only the projector process
        // listens on PROJECTOR_ADDR.
        assert!(
            !text.contains("verify-ca"),
            "{binary} offers verify-ca:\n{text}"
        );
        assert_eq!(
            text.contains("projector-addr"),
            name == "projector",
            "{binary}: --projector-addr\n{text}"
        );
        for (variable, bad) in [
            ("DATABASE_URL", "postgres://app:S3cretPw@db:99999999/orders"),
            ("DATABASE_URL", "mysql://app:S3cretPw@db/orders"),
            (
                "READ_DATABASE_URL",
                "postgres://app:S3cretPw@db/orders?sslmode=bogus",
            ),
            (
                "DATABASE_URL",
                "postgres://app:S3cretPw@db/orders?sslmode=verify-ca",
            ),
            (
                "DATABASE_URL",
                "postgres://app:S3cretPw@db/orders?sslmode=verify-full&sslrootcert=/no/ca.pem",
            ),
            (
                "DATABASE_URL",
                "postgres://app@db/orders?password=S3cretPw&sslmode=bogus",
            ),
            ("DATABASE_URL", "postgres://app@db/orders?passwrod=S3cretPw"),
            (
                "AMQP_URL",
                "amqps://app:S3cretPw@broker/%2f?cacertfile=/no/ca.pem",
            ),
            ("AMQP_URL", "amqps://app@broker/%2f?pass=S3cretPw"),
            ("AMQP_URL", "amqp://app:S3cretPw@[::1/x"),
        ] {
            if binary.ends_with("api-read") && variable == "AMQP_URL" {
                continue; // api-read has no broker
            }
            let output = Command::new(binary)
                .env_remove("DATABASE_URL")
                .env_remove("READ_DATABASE_URL")
                .env_remove("AMQP_URL")
                .env(variable, bad)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            assert!(
                !output.status.success(),
                "{binary}: {variable}={bad} accepted"
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(variable), "{binary} {variable}: {stderr}");
            assert!(
                !stderr.contains("S3cretPw"),
                "{binary} echoes {variable}: {stderr}"
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stops_cleanly_on(signal: i32) {
    let (write, read) = (free_port(), free_port());
    let mut child = binary()
        .env("WRITE_ADDR", format!("127.0.0.1:{write}"))
        .env("READ_ADDR", format!("127.0.0.1:{read}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    for _ in 0..3 {
        stdout.read_line(&mut banner).unwrap();
    }
    assert!(
        banner.contains(&format!("http://127.0.0.1:{write}/buy_order")),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("http://127.0.0.1:{read}/buy_orders")),
        "{banner}"
    );
    // it serves
    let mut health = std::net::TcpStream::connect(("127.0.0.1", read)).unwrap();
    std::io::Write::write_all(&mut health, b"GET /healthcheck HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut health, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.contains("buy-orders stopped"), "{rest}");
}

#[test]
fn sigterm_stops_it_cleanly() {
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn ctrl_c_stops_it_cleanly() {
    stops_cleanly_on(libc::SIGINT);
}

/// The all-in-one started with JSON logs, fixed prices and `env`, once it has printed its
/// banner: the child (its standard error still piped), its write port, and its standard output
/// (kept open: a closed pipe would make its later writes fail).
fn started_with_json_logs(
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    u16,
    BufReader<std::process::ChildStdout>,
) {
    let (write, read) = (free_port(), free_port());
    let mut command = binary();
    command
        .env("WRITE_ADDR", format!("127.0.0.1:{write}"))
        .env("READ_ADDR", format!("127.0.0.1:{read}"))
        .env("LOG_FORMAT", "json")
        .env("PRICE_SOURCE", "fixed:USD=50000")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    stdout.read_line(&mut banner).unwrap();
    (child, write, stdout)
}

#[test]
fn json_logs_have_one_line_per_request_with_a_request_id_and_one_per_decision() {
    // A line per request (REQUEST_LOG=all) and the per-order decision lines (DEBUG).
    let (child, write, _stdout) =
        started_with_json_logs(&[("RUST_LOG", "info,api_write=debug"), ("REQUEST_LOG", "all")]);
    let body = r#"{"currency":"USD","amount":"10","idempotence_key":"3f2504e0-4f89-11d3-9a0c-0305e82c3301"}"#;
    let request = format!(
        "PUT /buy_order HTTP/1.0\r\ncontent-type: application/json\r\nx-request-id: test-req-1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", write)).unwrap();
    std::io::Write::write_all(&mut socket, request.as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut socket, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-request-id: test-req-1"),
        "{answer}"
    );
    let mut probe = std::net::TcpStream::connect(("127.0.0.1", write)).unwrap();
    std::io::Write::write_all(&mut probe, b"GET /healthcheck HTTP/1.0\r\n\r\n").unwrap();
    let mut probed = String::new();
    std::io::Read::read_to_string(&mut probe, &mut probed).unwrap();
    assert!(probed.starts_with("HTTP/1.0 200"), "{probed}");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr.lines().filter(|l| l.contains("test-req-1")) {
        assert_eq!(line.matches("test-req-1").count(), 1, "the id once: {line}");
    }
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let request_line = lines
        .iter()
        .find(|l| l["message"] == "request" && l["path"] == "/buy_order")
        .expect("a request line");
    assert_eq!(request_line["span"]["request_id"], "test-req-1");
    assert_eq!(request_line["method"], "PUT");
    assert_eq!(request_line["status"], 200);
    let latency = request_line["latency_ms"].to_string();
    assert!(
        latency
            .split('.')
            .nth(1)
            .is_none_or(|decimals| decimals.len() <= 3),
        "whole microseconds, no float noise: {latency}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l["message"] == "request" && l["path"] == "/healthcheck"),
        "probes are not logged at INFO"
    );
    let placed = lines
        .iter()
        .find(|l| l["message"] == "order placed")
        .expect("a decision line");
    assert_eq!(
        placed["span"]["request_id"], "test-req-1",
        "every line of a request carries its id: {placed}"
    );
}

/// By default (`REQUEST_LOG=errors-and-slow`) a placed order writes no request line, a refusal
/// does; a flood of refusals writes no more than `REQUEST_LOG_MAX_PER_S` lines a second, counts
/// the rest, and the next line says how many it follows.
#[test]
fn by_default_refusals_get_a_request_line_and_a_flood_is_capped() {
    let (child, write, _stdout) =
        started_with_json_logs(&[("RUST_LOG", "info"), ("REQUEST_LOG_MAX_PER_S", "5")]);
    let send = |request: &str| {
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", write)).unwrap();
        std::io::Write::write_all(&mut socket, request.as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut socket, &mut answer).unwrap();
        answer
    };
    let put = |body: &str| {
        send(&format!(
            "PUT /buy_order HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let placed = put(
        r#"{"currency":"USD","amount":"10","idempotence_key":"3f2504e0-4f89-11d3-9a0c-0305e82c3301"}"#,
    );
    assert!(placed.starts_with("HTTP/1.0 200"), "{placed}");
    let flood = 50;
    for _ in 0..flood {
        let refused = put(r#"{"currency":"XXX"}"#);
        assert!(refused.starts_with("HTTP/1.0 4"), "{refused}");
    }
    std::thread::sleep(Duration::from_millis(400)); // a token back (5 a second)
    let last = put(
        r#"{"currency":"USD","amount":"-1","idempotence_key":"3f2504e0-4f89-11d3-9a0c-0305e82c3302"}"#,
    );
    assert!(last.starts_with("HTTP/1.0 4"), "{last}");
    let metrics = send("GET /metrics HTTP/1.0\r\n\r\n");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let requests: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|l| l["message"] == "request")
        .collect();
    assert!(
        requests.iter().all(|l| l["status"] != 200),
        "a placed order writes no request line by default: {requests:?}"
    );
    // One second's burst of 5 (perhaps one more token as the clock ticks), then the last.
    assert!(
        (6..=8).contains(&requests.len()),
        "{} request lines for {} refusals: {requests:?}",
        requests.len(),
        flood + 1
    );
    let written_in_flood = requests.len() as u64 - 1;
    let dropped = flood as u64 - written_in_flood;
    assert_eq!(
        requests.last().unwrap()["dropped_before"],
        dropped,
        "the line after the flood says how many were dropped"
    );
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("http_request_log_dropped_total"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no dropped-lines counter: {metrics}"));
    assert_eq!(counted.parse::<u64>().unwrap(), dropped);
}

/// Every counter the code records (`counter!("…"` in any crate's sources) is on a fresh
/// all-in-one's `/metrics` with its `# HELP` line before any request (unlabelled ones at 0);
/// every gauge and histogram shown has its `# HELP` line too (they show once set).
#[test]
fn every_metric_is_described_and_counters_start_at_zero() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut recorded = std::collections::BTreeSet::new();
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    dirs.push(root.join("src"));
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for macro_name in ["counter!(\"", "gauge!(\"", "histogram!(\""] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = &text[at + macro_name.len()..];
                    let name = rest[..rest.find('"').unwrap()].to_owned();
                    recorded.insert((macro_name == "counter!(\"", name));
                }
            }
        }
    }
    assert!(recorded.len() > 30, "{recorded:?}");
    let write = free_port();
    let mut child = binary()
        .env("WRITE_ADDR", format!("127.0.0.1:{write}"))
        .env("READ_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", write)).unwrap();
    std::io::Write::write_all(&mut socket, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut metrics = String::new();
    std::io::Read::read_to_string(&mut socket, &mut metrics).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    child.wait().unwrap();
    for (counter, name) in &recorded {
        let shown = metrics.lines().any(|l| l.starts_with(name.as_str()));
        // Its labels (route, status) exist only once a request is answered.
        let labelled_when_recorded = name == "http_requests_total";
        assert!(
            shown || !counter || labelled_when_recorded,
            "counter {name} is not shown:\n{metrics}"
        );
        assert!(
            !shown || metrics.contains(&format!("# HELP {name} ")),
            "{name} has no # HELP line:\n{metrics}"
        );
    }
    for counter in [
        "rate_limited_total",
        "cap_refusals_total",
        "idempotent_replays_total",
    ] {
        assert!(
            metrics.lines().any(|l| l == format!("{counter} 0")),
            "{counter} is not there at 0:\n{metrics}"
        );
    }
}
