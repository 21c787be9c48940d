//! `loadgen`: drives a running buy-orders for a fixed time and prints one JSON object of
//! results. Latencies are recorded in HDR histograms (microseconds).
//!
//! - `loadgen write --write-url URL[,URL…] [--read-url URL] --connections N --seconds S`:
//!   `PUT /buy_order` with unique keys from N concurrent connections (spread over the write URLs
//!   in turn: several api-write processes); with a read URL, a sampler meanwhile measures the lag
//!   from a PUT's 200 to the order appearing in `GET /buy_orders/<id>`.
//!   With `--probe K` as well, K probers meanwhile place an order and read it straight back
//!   through `buy-orders-client`, alternately with its consistency token (read-your-writes)
//!   and without: how often each misses, and the read-back latency with the token.
//!   With `--rate R` instead, the load is open-loop: R PUTs a second at fixed times, whatever
//!   the answers (at most N in flight; one that cannot be sent on time counts as `late`), with
//!   each latency taken from when the request was due, so a stall is not hidden by the sender
//!   waiting on it. `bench/run.sh` finds the highest rate whose lag p99 stays within 100 ms.
//! - `loadgen read --url URL --connections N --seconds S`: `GET` of one URL (a page).
//!
//! `BUY_ORDERS_API_KEY` (or `--api-key`), when set, is sent as `Authorization: Bearer …` on every
//! request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Debug, clap::Parser)]
#[command(name = "loadgen", about = "buy-orders load generator")]
enum Command {
    /// Writes at a given concurrency, with the read-side lag sampled meanwhile.
    Write {
        /// One or more api-write base URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        write_url: Vec<String>,
        /// api-read's base URL: samples the lag PUT → readable. Without it, no lag is sampled.
        #[arg(long)]
        read_url: Option<String>,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        #[arg(long, env = "BUY_ORDERS_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Read-back probers (needs --read-url and an API key): 0 for none.
        #[arg(long, default_value_t = 0)]
        probe: usize,
        /// Open-loop: this many PUTs a second at fixed times (at most `connections` in flight),
        /// instead of `connections` loops each sending when its last answer came.
        #[arg(long)]
        rate: Option<u64>,
        /// How often the lag sampler places an order and waits for it to be readable (ms).
        #[arg(long, default_value_t = 100)]
        lag_every_ms: u64,
        /// Print each lag sample to standard error (`lag <seconds into the run> <ms>`): to see
        /// when the slow ones happen.
        #[arg(long)]
        lag_trace: bool,
    },
    /// Reads one URL at a given concurrency.
    Read {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, env = "BUY_ORDERS_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
}

/// The key every client sends, set once from the command line.
static API_KEY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// The headers every request carries: the API key, if there is one.
fn client_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(Some(key)) = API_KEY.get() {
        let value = format!("Bearer {key}")
            .parse()
            .expect("a key is header-safe");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    headers
}

/// An HTTP client with at most one idle connection, sending the API key if there is one.
fn client() -> reqwest::Client {
    client_pooling(1)
}

/// An HTTP client keeping up to `idle` connections, sending the API key if there is one.
fn client_pooling(idle: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(idle)
        .default_headers(client_headers())
        .build()
        .expect("a client")
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn summary(h: &Histogram<u64>, elapsed: Duration, errors: u64) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "requests": h.len(),
        "per_second": (h.len() as f64 / elapsed.as_secs_f64()).round(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "errors": errors,
    })
}

/// Runs `connections` loops of `request` until `deadline`; returns latencies and errors.
async fn drive<F, Fut>(
    connections: usize,
    seconds: u64,
    request: F,
) -> (Histogram<u64>, u64, Duration)
where
    F: Fn(reqwest::Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|worker| {
            let request = request.clone();
            tokio::spawn(async move {
                // one client per worker: one keep-alive connection each
                let client = client();
                let (mut h, mut errors) = (histogram(), 0u64);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let ok = request(client.clone(), worker).await;
                    if ok {
                        h.record(sent.elapsed().as_micros().max(1) as u64).unwrap();
                    } else {
                        errors += 1;
                    }
                }
                (h, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (histogram(), 0);
    for worker in workers {
        let (h, e) = worker.await.unwrap();
        all.add(h).unwrap();
        errors += e;
    }
    (all, errors, started.elapsed())
}

async fn put(client: &reqwest::Client, write_url: &str) -> Option<String> {
    let body = json!({"currency": "USD", "amount": "10.00", "idempotence_key": uuid::Uuid::new_v4().to_string()});
    let response = client
        .put(format!("{write_url}/buy_order"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let answer: serde_json::Value = response.json().await.ok()?;
    answer["buy_order"]["id"].as_str().map(str::to_owned)
}

/// Every 100 ms: a PUT, then `GET /buy_orders/<id>` until it answers 200; records the time from
/// the PUT's answer to the order being readable.
async fn sample_lag(
    write_url: String,
    read_url: String,
    seconds: u64,
    every: Duration,
    trace: bool,
) -> Histogram<u64> {
    let started = Instant::now();
    let client = client();
    let mut lag = histogram();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if let Some(id) = put(&client, &write_url).await {
            let answered = Instant::now();
            let give_up = answered + Duration::from_secs(30);
            while Instant::now() < give_up {
                let found = client
                    .get(format!("{read_url}/buy_orders/{id}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if found {
                    let took = answered.elapsed();
                    lag.record(took.as_micros().max(1) as u64).unwrap();
                    if trace {
                        eprintln!(
                            "lag {:.3} {:.3}",
                            started.elapsed().as_secs_f64(),
                            took.as_secs_f64() * 1000.0
                        );
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tokio::time::sleep(every).await;
    }
    lag
}

/// What an open-loop run saw.
struct OpenLoop {
    /// Latency of each answered PUT, from when it was due (µs).
    latency: Histogram<u64>,
    errors: u64,
    /// PUTs that could not be sent when due: `connections` were already in flight.
    late: u64,
    elapsed: Duration,
}

/// `rate` PUTs a second for `seconds`, each sent when due (spread over `urls` in turn), at most
/// `in_flight` at once.
async fn open_loop(urls: Arc<Vec<String>>, rate: u64, seconds: u64, in_flight: usize) -> OpenLoop {
    let client = client_pooling(in_flight);
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let total = rate.saturating_mul(seconds);
    let every = Duration::from_secs(1).div_f64(rate.max(1) as f64);
    let started = tokio::time::Instant::now();
    let mut run = OpenLoop {
        latency: histogram(),
        errors: 0,
        late: 0,
        elapsed: Duration::ZERO,
    };
    let record =
        |run: &mut OpenLoop, done: Result<(bool, Duration), tokio::task::JoinError>| match done
            .expect("a PUT task")
        {
            (true, took) => run
                .latency
                .record(took.as_micros().max(1) as u64)
                .expect("within bounds"),
            (false, _) => run.errors += 1,
        };
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = started + every.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        while let Some(done) = tasks.try_join_next() {
            record(&mut run, done);
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            run.late += 1;
            continue;
        };
        let (client, url) = (client.clone(), urls[n as usize % urls.len()].clone());
        tasks.spawn(async move {
            let _slot = slot;
            let placed = put(&client, &url).await.is_some();
            (placed, due.elapsed())
        });
    }
    while let Some(done) = tasks.join_next().await {
        record(&mut run, done);
    }
    run.elapsed = started.elapsed();
    run
}

/// What the probers saw.
#[derive(Default)]
struct Probed {
    with_token: u64,
    with_token_missed: u64,
    without_token: u64,
    without_token_missed: u64,
    /// PUT answered → order read back, with the token.
    readback: Option<Histogram<u64>>,
    place_failures: u64,
}

/// `probers` loops until `seconds` pass: place an order, read it back at once with the
/// client's token (a miss is anything but the order); place another, read it back at once
/// without a token (a miss: not there yet).
async fn probe(
    write_url: String,
    read_url: String,
    key: String,
    probers: usize,
    seconds: u64,
) -> Probed {
    use buy_orders_client::{Client, Currency, FiatAmount, NewOrder};
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..probers)
        .map(|_| {
            let (write_url, read_url, key) = (write_url.clone(), read_url.clone(), key.clone());
            tokio::spawn(async move {
                let build = |token: bool| {
                    Client::builder(key.clone())
                        .write_url(write_url.clone())
                        .read_url(read_url.clone())
                        .read_your_writes(token)
                        .build()
                        .expect("a client")
                };
                let (with, without) = (build(true), build(false));
                let order = || NewOrder::new(Currency::USD, FiatAmount::parse("10.00").unwrap());
                let mut seen = Probed {
                    readback: Some(histogram()),
                    ..Probed::default()
                };
                while Instant::now() < deadline {
                    match with.place(order()).await {
                        Ok(placed) => {
                            let answered = Instant::now();
                            seen.with_token += 1;
                            match with.get(placed.order.id).await {
                                Ok(Some(_)) => {
                                    let us = answered.elapsed().as_micros().max(1) as u64;
                                    seen.readback.as_mut().unwrap().record(us).unwrap();
                                }
                                _ => seen.with_token_missed += 1,
                            }
                        }
                        Err(_) => seen.place_failures += 1,
                    }
                    match without.place(order()).await {
                        Ok(placed) => {
                            seen.without_token += 1;
                            if !matches!(without.get(placed.order.id).await, Ok(Some(_))) {
                                seen.without_token_missed += 1;
                            }
                        }
                        Err(_) => seen.place_failures += 1,
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Probed {
        readback: Some(histogram()),
        ..Probed::default()
    };
    for task in tasks {
        let seen = task.await.unwrap();
        all.with_token += seen.with_token;
        all.with_token_missed += seen.with_token_missed;
        all.without_token += seen.without_token;
        all.without_token_missed += seen.without_token_missed;
        all.place_failures += seen.place_failures;
        all.readback
            .as_mut()
            .unwrap()
            .add(seen.readback.unwrap())
            .unwrap();
    }
    all
}

#[tokio::main]
async fn main() {
    match Command::parse() {
        Command::Write {
            write_url,
            read_url,
            connections,
            seconds,
            api_key,
            probe: probers,
            rate,
            lag_every_ms,
            lag_trace,
        } => {
            API_KEY.set(api_key.clone()).expect("set once");
            let prober = match (&read_url, api_key, probers) {
                (Some(read_url), Some(key), 1..) => Some(tokio::spawn(probe(
                    write_url[0].clone(),
                    read_url.clone(),
                    key,
                    probers,
                    seconds,
                ))),
                (_, _, 0) => None,
                _ => panic!("--probe needs --read-url and an API key"),
            };
            let sampler = read_url.map(|read_url| {
                let every = Duration::from_millis(lag_every_ms);
                tokio::spawn(sample_lag(
                    write_url[0].clone(),
                    read_url,
                    seconds,
                    every,
                    lag_trace,
                ))
            });
            let urls = Arc::new(write_url);
            let mut out = match rate {
                Some(rate) => {
                    let run = open_loop(urls, rate, seconds, connections).await;
                    let mut out = summary(&run.latency, run.elapsed, run.errors);
                    out["rate"] = json!(rate);
                    out["late"] = json!(run.late);
                    out
                }
                None => {
                    let (h, errors, elapsed) =
                        drive(connections, seconds, move |client, worker| {
                            let urls = urls.clone();
                            async move { put(&client, &urls[worker % urls.len()]).await.is_some() }
                        })
                        .await;
                    summary(&h, elapsed, errors)
                }
            };
            out["connections"] = json!(connections);
            if let Some(sampler) = sampler {
                let lag = sampler.await.unwrap();
                out["lag_p50_ms"] = json!(lag.value_at_quantile(0.5) as f64 / 1000.0);
                out["lag_p99_ms"] = json!(lag.value_at_quantile(0.99) as f64 / 1000.0);
                out["lag_samples"] = json!(lag.len());
            }
            if let Some(prober) = prober {
                let seen = prober.await.unwrap();
                let readback = seen.readback.unwrap();
                out["probe_with_token"] = json!(seen.with_token);
                out["probe_with_token_missed"] = json!(seen.with_token_missed);
                out["probe_without_token"] = json!(seen.without_token);
                out["probe_without_token_missed"] = json!(seen.without_token_missed);
                out["probe_place_failures"] = json!(seen.place_failures);
                out["readback_p50_ms"] = json!(readback.value_at_quantile(0.5) as f64 / 1000.0);
                out["readback_p99_ms"] = json!(readback.value_at_quantile(0.99) as f64 / 1000.0);
            }
            println!("{out}");
        }
        Command::Read {
            url,
            connections,
            seconds,
            api_key,
        } => {
            API_KEY.set(api_key).expect("set once");
            let url = Arc::new(url);
            let (h, errors, elapsed) = drive(connections, seconds, move |client, _| {
                let url = url.clone();
                async move {
                    match client.get(url.as_str()).send().await {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    }
                }
            })
            .await;
            let mut out = summary(&h, elapsed, errors);
            out["connections"] = json!(connections);
            println!("{out}");
        }
    }
}
