//! Opening an AMQP connection with `TCP_NODELAY` set.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use amiquip::{Auth, Connection, ConnectionOptions, ConnectionTuning};
use percent_encoding::percent_decode_str;

use crate::error::BusError;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Heartbeat interval asked of the broker, so a dead peer is noticed.
const HEARTBEAT_SECS: u16 = 10;

/// An `amqp://` URL taken apart. The host name is kept, not its addresses: it is resolved at
/// each connection, so a broker recreated under a new address is found again. `Debug` never
/// shows the password.
#[derive(Clone)]
pub struct AmqpAddress {
    host: String,
    port: u16,
    username: String,
    password: String,
    vhost: String,
}

impl std::fmt::Debug for AmqpAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpAddress")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"***")
            .field("vhost", &self.vhost)
            .finish()
    }
}

/// Parses `amqp://user:pass@host:port/vhost` (defaults: guest/guest, port 5672, vhost `/`).
pub fn parse(text: &str) -> Result<AmqpAddress, BusError> {
    let bad = |why: &str| BusError::BadUrl(format!("{}: {why}", settings_kit::redact_url(text)));
    let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "amqp" {
        return Err(bad("only amqp:// is supported (TLS is not built in)"));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost");
    let port = url.port().unwrap_or(5672);
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let username = match url.username() {
        "" => "guest".to_owned(),
        user => decode(user),
    };
    let password = url.password().map_or_else(|| "guest".to_owned(), decode);
    let vhost = match url.path().trim_start_matches('/') {
        "" => "/".to_owned(),
        path if path.contains('/') => return Err(bad("the path must be one vhost")),
        path => decode(path),
    };
    Ok(AmqpAddress {
        host: host.to_owned(),
        port,
        username,
        password,
        vhost,
    })
}

impl AmqpAddress {
    /// Whether the broker accepts TCP connections (a cheap readiness probe; no AMQP handshake).
    pub async fn reachable(&self) -> Result<(), String> {
        let target = (self.host.as_str(), self.port);
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(format!("broker {}:{}: {err}", self.host, self.port)),
            Err(_) => Err(format!("broker {}:{}: timed out", self.host, self.port)),
        }
    }
}

/// Opens a connection with `TCP_NODELAY` set on the socket (amiquip leaves Nagle on, which
/// costs ~40 ms per synchronous round trip).
///
/// The host name is resolved here, at each connection (blocking: this runs on the bus's own
/// threads), and each address tried in turn.
pub fn open(address: &AmqpAddress) -> Result<Connection, BusError> {
    let addrs: Vec<SocketAddr> = (address.host.as_str(), address.port)
        .to_socket_addrs()
        .map_err(|e| BusError::Unavailable(format!("cannot resolve {}: {e}", address.host)))?
        .collect();
    let mut last = BusError::Unavailable(format!("{} resolves to no address", address.host));
    for addr in &addrs {
        let attempt = (|| {
            let socket = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)
                .map_err(|e| BusError::Unavailable(format!("{addr}: {e}")))?;
            socket
                .set_nodelay(true)
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            let stream = mio::net::TcpStream::from_stream(socket)
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            let options = ConnectionOptions::default()
                .auth(Auth::Plain {
                    username: address.username.clone(),
                    password: address.password.clone(),
                })
                .virtual_host(address.vhost.clone())
                .heartbeat(HEARTBEAT_SECS)
                .connection_timeout(Some(CONNECT_TIMEOUT));
            Connection::insecure_open_stream(stream, options, ConnectionTuning::default())
                .map_err(|e| BusError::Unavailable(format!("{addr}: {e}")))
        })();
        match attempt {
            Ok(connection) => return Ok(connection),
            Err(err) => last = err,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_decoding() {
        let a = parse("amqp://127.0.0.1").unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str(), a.vhost.as_str()),
            ("guest", "guest", "/")
        );
        assert_eq!(a.port, 5672);
        let b = parse("amqp://u%40x:p%2Fw@127.0.0.1:5673/%2f").unwrap();
        assert_eq!(
            (b.username.as_str(), b.password.as_str(), b.vhost.as_str()),
            ("u@x", "p/w", "/")
        );
        assert_eq!(parse("amqp://127.0.0.1/orders").unwrap().vhost, "orders");
        assert!(parse("amqps://127.0.0.1").is_err());
        assert!(parse("http://127.0.0.1").is_err());
        assert!(parse("amqp://127.0.0.1/a/b").is_err());
        assert!(parse("not a url").is_err());
        // Not resolved when parsed: a name that does not resolve (yet) is fine until connecting.
        let later = parse("amqp://app:S3cret@broker.invalid:5672/%2f").unwrap();
        assert_eq!(later.host, "broker.invalid");
        assert!(!format!("{later:?}").contains("S3cret"), "{later:?}");
    }
}
