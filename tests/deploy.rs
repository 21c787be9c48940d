//! deploy/: the compose file's structure (no Docker engine here to run it), the Dockerfile's
//! shape, `.env.example` against the compose file, and `deploy/local.sh` bringing the
//! distributed topology up and down on this machine.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_yaml_ng::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    let mut value: Value = serde_yaml_ng::from_str(&read("deploy/docker-compose.yml")).unwrap();
    value.apply_merge().unwrap();
    value
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_has_every_service_with_health_checks_and_start_order() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "api-read",
            "api-write",
            "grafana",
            "postgres",
            "projector",
            "prometheus",
            "rabbitmq"
        ])
    );
    for name in [
        "postgres",
        "rabbitmq",
        "api-write",
        "api-read",
        "projector",
        "prometheus",
        "grafana",
    ] {
        assert!(
            compose["services"][name]["healthcheck"]["test"].is_sequence(),
            "{name} health check"
        );
    }
    assert!(compose["services"]["rabbitmq"]["image"]
        .as_str()
        .unwrap()
        .contains("management"));
    for app in ["api-write", "api-read", "projector"] {
        let service = &compose["services"][app];
        for dependency in ["postgres", "rabbitmq"] {
            assert_eq!(
                service["depends_on"][dependency]["condition"], "service_healthy",
                "{app} waits for {dependency}"
            );
        }
        let environment = &service["environment"];
        assert!(
            environment["DATABASE_URL"]
                .as_str()
                .unwrap()
                .contains("@postgres:5432/"),
            "{app}"
        );
        assert!(
            environment["AMQP_URL"]
                .as_str()
                .unwrap()
                .contains("@rabbitmq:5672/"),
            "{app}"
        );
        assert_eq!(service["build"]["dockerfile"], "deploy/Dockerfile");
    }
    assert_eq!(
        strings(&compose["services"]["api-write"]["command"]),
        ["api-write"]
    );
    assert_eq!(
        strings(&compose["services"]["api-read"]["command"]),
        ["api-read"]
    );
    assert_eq!(
        strings(&compose["services"]["projector"]["command"]),
        ["projector", "run"]
    );
    assert_eq!(
        strings(&compose["services"]["api-write"]["ports"]),
        ["8777:8777"]
    );
    assert_eq!(
        strings(&compose["services"]["api-read"]["ports"]),
        ["8778:8778"]
    );
    assert_eq!(
        compose["services"]["api-write"]["environment"]["WRITE_ADDR"],
        "0.0.0.0:8777"
    );
    assert_eq!(
        compose["services"]["api-read"]["environment"]["READ_ADDR"],
        "0.0.0.0:8778"
    );
}

/// Prometheus loads the alerting rules and scrapes every service; Grafana is provisioned with
/// it as data source and the dashboard; both files the compose file mounts exist.
#[test]
fn prometheus_and_grafana_are_provisioned_from_deploy() {
    let compose = compose();
    let mounts = |service: &str| strings(&compose["services"][service]["volumes"]);
    for mount in mounts("prometheus").iter().chain(mounts("grafana").iter()) {
        let Some(local) = mount.strip_prefix("./") else {
            continue; // a named volume
        };
        let path = local.split(':').next().unwrap();
        assert!(
            root().join("deploy").join(path).exists(),
            "{mount} mounts a missing file"
        );
    }
    let prometheus: Value =
        serde_yaml_ng::from_str(&read("deploy/prometheus/prometheus.yml")).unwrap();
    assert_eq!(
        strings(&prometheus["rule_files"]),
        ["/etc/prometheus/alerts.yml"]
    );
    assert!(mounts("prometheus")
        .contains(&"./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro".to_owned()));
    let targets = strings(&prometheus["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(
        targets,
        ["api-write:8777", "api-read:8778", "projector:8779"]
    );
    let datasource: Value = serde_yaml_ng::from_str(&read(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
    ))
    .unwrap();
    assert_eq!(
        datasource["datasources"][0]["url"],
        "http://prometheus:9090"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/buy-orders.json")).unwrap();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|panel| panel["targets"][0]["expr"].as_str().unwrap())
        .collect();
    // The dashboard shows what the alerts watch.
    for metric in metrics_in(&read("deploy/prometheus/alerts.yml")) {
        if metric == "up" {
            continue; // Prometheus's own
        }
        assert!(
            exprs.iter().any(|expr| expr.contains(&metric)),
            "no panel shows {metric}"
        );
    }
}

/// The metric names an expression file uses (identifiers followed by `{`, `[` or `)` or
/// compared), those this project exports.
fn metrics_in(text: &str) -> BTreeSet<String> {
    let known = [
        "projector_lag_positions",
        "projector_lag_seconds",
        "relay_backlog_events",
        "relay_lag_seconds",
        "relay_active",
        "btc_remaining",
        "btc_cap",
        "http_requests_total",
        "price_feed_errors_total",
        "price_fetches_total",
        "service_ready",
        "store_unreadable_events_total",
        "up",
    ];
    known
        .into_iter()
        .filter(|metric| {
            text.match_indices(metric).any(|(at, _)| {
                let before = text[..at].chars().last();
                let after = text[at + metric.len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        })
        .map(str::to_owned)
        .collect()
}

/// Every alert's unit tests pass (`promtool test rules`, from Debian's `prometheus` package,
/// which `.ci/run` installs), and every metric an alert reads is one the code exports.
#[test]
fn the_alerting_rules_pass_their_unit_tests_and_read_real_metrics() {
    let promtool = |args: &[&str]| {
        Command::new("promtool")
            .args(args)
            .current_dir(root().join("deploy/prometheus"))
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool is needed (apt-get install prometheus; .ci/run does): {e}")
            })
    };
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    let tested = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(
        tested.status.success(),
        "{}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    let alerts = read("deploy/prometheus/alerts.yml");
    let used = metrics_in(&alerts);
    assert!(used.len() >= 12, "{used:?}");
    let mut sources = String::new();
    for dir in [
        "api-write/src",
        "api-read/src",
        "projector/src",
        "event-bus/src",
        "order-store/src",
        "price-feed/src",
        "service-kit/src",
    ] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            } else if path.is_dir() {
                for inner in std::fs::read_dir(&path).unwrap().flatten() {
                    if inner.path().extension().is_some_and(|e| e == "rs") {
                        sources.push_str(&std::fs::read_to_string(inner.path()).unwrap());
                    }
                }
            }
        }
    }
    for metric in used {
        if metric == "up" {
            continue;
        }
        assert!(
            sources.contains(&format!("\"{metric}\"")),
            "the alerts read {metric}, which no service exports"
        );
    }
}

#[test]
fn the_dockerfile_is_multi_stage_and_runs_as_a_non_root_user() {
    let dockerfile = read("deploy/Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1))
        .collect();
    assert_eq!(stages, ["chef", "planner", "build", "runtime"]);
    // Dependencies are cooked from the recipe before the sources are copied into the build
    // stage: a code change does not rebuild them.
    let build = dockerfile
        .split("FROM chef AS build")
        .nth(1)
        .expect("a build stage");
    let cook = build.find("cargo chef cook").expect("dependencies cooked");
    let sources = build.find("COPY . .").expect("sources copied");
    assert!(cook < sources, "dependencies before sources");
    assert!(build[..cook].contains("COPY --from=planner /src/recipe.json"));
    assert!(
        dockerfile.contains("FROM debian:bookworm-slim"),
        "small runtime image"
    );
    let user = dockerfile
        .lines()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root"), "{user}");
    for binary in ["api-write", "api-read", "projector", "buy-orders"] {
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "{binary} copied"
        );
    }
}

/// The build context is the repository root: a developer's `target/` (gigabytes), the git
/// history and local env files must stay out of it.
#[test]
fn dockerignore_keeps_builds_history_and_secrets_out_of_the_context() {
    let ignore = read(".dockerignore");
    let lines: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for pattern in [
        "target/",
        "**/target/",
        ".git/",
        ".env",
        "**/*.env",
        "deploy/.run/",
    ] {
        assert!(lines.contains(pattern), "{pattern} not ignored");
    }
    assert!(
        lines.contains("!deploy/.env.example"),
        "the documented example stays in"
    );
}

#[test]
fn env_example_documents_exactly_the_variables_compose_reads() {
    let compose = read("deploy/docker-compose.yml");
    let used: BTreeSet<String> = compose
        .split("${")
        .skip(1)
        .map(|rest| rest.split([':', '}']).next().unwrap().to_owned())
        .collect();
    let documented: BTreeSet<String> = read("deploy/.env.example")
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap().to_owned())
        .collect();
    assert_eq!(used, documented);
}

fn local(args: &[&str], name: &str, base_port: u16, run_dir: &Path) -> std::process::Output {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_buy-orders"))
        .parent()
        .unwrap();
    Command::new(root().join("deploy/local.sh"))
        .args(args)
        .env("LOCAL_NAME", name)
        .env("LOCAL_BASE_PORT", base_port.to_string())
        .env("LOCAL_RUN_DIR", run_dir)
        .env("LOCAL_BIN_DIR", bin_dir)
        .env("PRICE_SOURCE", "fixed:USD=50000,EUR=40000,GBP=30000")
        .output()
        .unwrap()
}

/// Down however the test ends.
struct Down<'a>(&'a str, u16, &'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        local(&["down"], self.0, self.1, self.2);
    }
}

#[tokio::test]
async fn local_sh_runs_the_distributed_topology_with_two_writers() {
    let name = format!("bo_local_{}", uuid::Uuid::new_v4().simple());
    // Below Linux's ephemeral range (32768 and up), where any outgoing connection may already
    // hold a port: 20,000 + 1,199 × 10 + the topology's 20 stays under it. (With % 2000 the
    // projector once found its port taken, and the test failed.)
    let base = 20_000 + (std::process::id() % 1200) as u16 * 10;
    let run_dir = std::env::temp_dir().join(&name);
    let _down = Down(&name, base, &run_dir);
    let up = local(&["up", "--write-instances", "2"], &name, base, &run_dir);
    assert!(
        up.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let status =
        String::from_utf8_lossy(&local(&["status"], &name, base, &run_dir).stdout).into_owned();
    for process in ["api-write-0", "api-write-1", "api-read", "projector"] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(process) && l.contains("running")),
            "{status}"
        );
    }

    let key = std::fs::read_to_string(run_dir.join("api-key")).unwrap();
    let key = key.trim();
    assert!(key.starts_with("bo_"), "up writes the local client's key");
    let client = reqwest::Client::builder()
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        )]))
        .build()
        .unwrap();
    let anonymous = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/buy_orders", base + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "AUTH=required by default");
    for writer in [base, base + 10] {
        let body = serde_json::json!({"currency": "USD", "amount": "10", "idempotence_key": uuid::Uuid::new_v4().to_string()});
        let response = client
            .put(format!("http://127.0.0.1:{writer}/buy_order"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page: serde_json::Value = client
            .get(format!("http://127.0.0.1:{}/buy_orders", base + 1))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["rows"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders not projected: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let down = local(&["down"], &name, base, &run_dir);
    assert!(down.status.success());
    assert_eq!(
        String::from_utf8_lossy(&local(&["status"], &name, base, &run_dir).stdout).trim(),
        "down"
    );
    let again = local(&["up", "--write-instances", "0"], &name, base, &run_dir);
    assert!(!again.status.success(), "0 writers is refused");
}
