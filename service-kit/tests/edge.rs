//! The HTTP edge against clients that are slow, idle or stuck, on loopback with short limits:
//! every wait ends, the server closes what it must, and normal requests keep being served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use service_kit::{CancellationToken, HttpSettings, NotReady, Ops};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warp::Filter;

const LIMIT: Duration = Duration::from_millis(400);

async fn server(
    max_connections: u32,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let http = HttpSettings {
        header_timeout: LIMIT,
        body_timeout: LIMIT,
        request_timeout: Duration::from_millis(1500),
        max_connections,
        shutdown_grace: Duration::from_millis(500),
    };
    let ops = Ops::new("edge-test", &[("/hello", "GET")], || async {
        Ok::<(), NotReady>(())
    });
    let routes = warp::path!("hello")
        .and(warp::get())
        .map(|| "hi")
        .or(warp::path!("echo")
            .and(warp::put())
            .and(service_kit::body::json_body(1024))
            .map(|v: Box<serde_json::value::RawValue>| v.get().to_owned()))
        .or(warp::path!("slow").then(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never"
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task =
        tokio::spawn(
            async move { service_kit::serve_with(ops, routes, listener, token, &http).await },
        );
    (addr, stop, task)
}

/// Reads until the server closes the connection (or 5 s pass); what it sent, and when it closed.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Option<Instant>) {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&all).into(), Some(Instant::now()))
            }
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&all).into(), None),
        }
    }
}

async fn get_hello(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(&mut stream).await.0
}

#[tokio::test]
async fn a_client_that_sends_its_headers_a_byte_at_a_time_is_cut_off() {
    let (addr, _stop, _) = server(64).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let dribble = tokio::spawn(async move {
        for byte in b"GET /hello HTTP/1.1\r\nhost: x\r\nx-slow: ".iter().cycle() {
            if slow.write_all(&[*byte]).await.is_err() {
                return started.elapsed(); // the server closed it
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    });
    let cut_after = tokio::time::timeout(Duration::from_secs(5), dribble)
        .await
        .expect("the slow client was never cut off")
        .unwrap();
    assert!(cut_after < LIMIT * 4, "cut after {cut_after:?}");
    assert!(
        get_hello(addr).await.ends_with("hi"),
        "others are still served"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (addr, _stop, _) = server(64).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let sent = Instant::now();
    let (answer, closed) = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let closed = closed.expect("an idle keep-alive connection was kept for 5 s");
    assert!(closed - sent < LIMIT * 4, "{:?}", closed - sent);
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_a_408_and_the_connection_closes() {
    let (addr, _stop, _) = server(64).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"PUT /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"a\":1",
        )
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(closed.is_some(), "the connection was kept");
}

#[tokio::test]
async fn a_request_past_its_deadline_is_abandoned_with_a_json_503() {
    let (addr, _stop, _) = server(64).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""code":"timeout""#), "{answer}");
}

#[tokio::test]
async fn with_every_connection_held_by_slow_clients_a_normal_request_still_gets_through() {
    let (addr, _stop, _) = server(8).await;
    // Eight connections that send half a header and then nothing.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /hel").await.unwrap();
        held.push(stream);
    }
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), get_hello(addr))
        .await
        .expect("a normal request waited more than 5 s");
    assert!(answer.ends_with("hi"), "{answer}");
    assert!(started.elapsed() < LIMIT * 4, "{:?}", started.elapsed());
    for mut stream in held {
        assert!(
            read_until_closed(&mut stream).await.1.is_some(),
            "slow connection kept"
        );
    }
}

#[tokio::test]
async fn shutdown_is_bounded_by_its_grace_even_with_a_request_stuck() {
    let (addr, stop, task) = server(64).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("shutdown waited for the stuck request")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
