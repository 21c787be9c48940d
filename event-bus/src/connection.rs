//! Opening an AMQP connection, plain (`amqp://`) or over TLS (`amqps://`), with `TCP_NODELAY`
//! set.
//!
//! TLS follows RabbitMQ's own URI conventions (its "URI query parameters" page), read from the
//! `amqps://` URL's query:
//!
//! | parameter                | meaning                                                          |
//! |--------------------------|------------------------------------------------------------------|
//! | `cacertfile`             | PEM file of the authorities trusted for the broker (instead of the system's roots) |
//! | `certfile`, `keyfile`    | a client certificate and its key (PEM; both or neither)          |
//! | `verify`                 | `verify_peer` (the default: chain and host name) or `verify_none` |
//! | `server_name_indication` | the name sent (SNI) and checked, instead of the URL's host; `disable` sends none |
//!
//! The certificate and the host name are verified unless the URL says `verify=verify_none`.
//! A failed verification says which check failed (an untrusted signer, a certificate for
//! another host, a port that does not speak TLS), and so does a plain `amqp://` URL pointed at
//! a TLS port. TLS is OpenSSL's, through `native-tls` (amiquip's own TLS support).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use amiquip::{Auth, Connection, ConnectionOptions, ConnectionTuning};
use percent_encoding::percent_decode_str;

use crate::error::BusError;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Heartbeat interval asked of the broker, so a dead peer is noticed.
const HEARTBEAT_SECS: u16 = 10;
/// IANA's ports: AMQP and AMQP over TLS.
const AMQP_PORT: u16 = 5672;
const AMQPS_PORT: u16 = 5671;

/// An `amqp://` or `amqps://` URL taken apart. The host name is kept, not its addresses: it is
/// resolved at each connection, so a broker recreated under a new address is found again. The
/// TLS files are read when the URL is parsed (a missing file fails at start-up, not at the
/// first connection). `Debug` never shows the password.
#[derive(Clone)]
pub struct AmqpAddress {
    pub(crate) host: String,
    pub(crate) port: u16,
    username: String,
    password: String,
    vhost: String,
    tls: Option<Tls>,
}

/// How an `amqps://` connection is secured.
#[derive(Clone)]
struct Tls {
    connector: native_tls::TlsConnector,
    /// The name sent and verified: the URL's host unless `server_name_indication` says another.
    server_name: String,
    verify: bool,
    /// Whether a client certificate is presented (`certfile`): what a handshake cut short most
    /// likely means depends on it.
    client_certificate: bool,
}

impl std::fmt::Debug for AmqpAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpAddress")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"***")
            .field("vhost", &self.vhost)
            .field(
                "tls",
                &self
                    .tls
                    .as_ref()
                    .map(|tls| (tls.server_name.as_str(), tls.verify)),
            )
            .finish()
    }
}

/// The TLS parameters of an `amqps://` URL, before their files are read.
#[derive(Default)]
struct TlsQuery {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    verify: Option<bool>,
    /// `None`: the URL's host; `Some(None)`: `disable`.
    sni: Option<Option<String>>,
}

/// Parses `amqp://user:pass@host:port/vhost` or `amqps://…?cacertfile=…` (defaults:
/// guest/guest, port 5672 or 5671, vhost `/`). Errors name the parameter or file, never the
/// password.
pub fn parse(text: &str) -> Result<AmqpAddress, BusError> {
    let bad = |why: &str| BusError::BadUrl(format!("{}: {why}", settings_kit::redact_url(text)));
    let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    let secure = match url.scheme() {
        "amqp" => false,
        "amqps" => true,
        _ => return Err(bad("the scheme must be amqp:// or amqps://")),
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url
        .port()
        .unwrap_or(if secure { AMQPS_PORT } else { AMQP_PORT });
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
    let mut query = TlsQuery::default();
    for (key, value) in url.query_pairs() {
        let file = || Some(PathBuf::from(value.as_ref()));
        match key.as_ref() {
            "cacertfile" => query.ca = file(),
            "certfile" => query.cert = file(),
            "keyfile" => query.key = file(),
            "verify" => {
                query.verify = Some(match value.as_ref() {
                    "verify_peer" => true,
                    "verify_none" => false,
                    _ => return Err(bad("verify must be verify_peer or verify_none")),
                })
            }
            "server_name_indication" => {
                query.sni = Some(match value.as_ref() {
                    "disable" => None,
                    "" => return Err(bad("server_name_indication is empty")),
                    name => Some(name.to_owned()),
                })
            }
            // Named, its value never shown (a misplaced password, say).
            other => {
                return Err(bad(&format!(
                    "unsupported query parameter {other:?} (supported: cacertfile, certfile, \
                     keyfile, verify, server_name_indication)"
                )))
            }
        }
    }
    let tls = if secure {
        Some(query.into_tls(host).map_err(|why| bad(&why))?)
    } else {
        if url.query().is_some_and(|q| !q.is_empty()) {
            return Err(bad(
                "TLS parameters are for amqps:// URLs (this one is plain amqp://)",
            ));
        }
        None
    };
    Ok(AmqpAddress {
        host: host.to_owned(),
        port,
        username,
        password,
        vhost,
        tls,
    })
}

impl TlsQuery {
    /// The connector these parameters ask for, its files read now.
    fn into_tls(self, host: &str) -> Result<Tls, String> {
        let verify = self.verify.unwrap_or(true);
        let mut builder = native_tls::TlsConnector::builder();
        builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        if let Some(ca) = &self.ca {
            if !verify {
                return Err(
                    "cacertfile with verify=verify_none: nothing would be verified against it"
                        .into(),
                );
            }
            // RabbitMQ's meaning: these authorities, not the system's.
            builder.disable_built_in_roots(true);
            for cert in read_certificates(ca)? {
                builder.add_root_certificate(cert);
            }
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let read = |what: &str, path: &Path| {
                    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
                };
                let identity = native_tls::Identity::from_pkcs8(
                    &read("certfile", cert)?,
                    &read("keyfile", key)?,
                )
                .map_err(|e| {
                    format!(
                        "certfile {} with keyfile {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?;
                builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err("certfile and keyfile go together: give both or neither".into()),
        }
        let client_certificate = self.cert.is_some();
        let server_name = match &self.sni {
            None => host.to_owned(),
            Some(Some(name)) => name.clone(),
            Some(None) => {
                builder.use_sni(false);
                host.to_owned()
            }
        };
        if !verify {
            tracing::warn!(
                "AMQP_URL says verify=verify_none: the broker's certificate and host name \
                 are not checked"
            );
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        let connector = builder
            .build()
            .map_err(|e| format!("TLS settings refused: {e}"))?;
        Ok(Tls {
            connector,
            server_name,
            verify,
            client_certificate,
        })
    }
}

/// The certificates of a PEM file (one or several); an error names the file.
fn read_certificates(path: &Path) -> Result<Vec<native_tls::Certificate>, String> {
    let named = |e: &dyn std::fmt::Display| format!("cacertfile {}: {e}", path.display());
    let pem = std::fs::read_to_string(path).map_err(|e| named(&e))?;
    const END: &str = "-----END CERTIFICATE-----";
    let certs = pem
        .split_inclusive(END)
        .filter(|block| block.contains("-----BEGIN CERTIFICATE-----"))
        .map(|block| native_tls::Certificate::from_pem(block.trim().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(&e))?;
    if certs.is_empty() {
        return Err(named(&"no certificate in the file"));
    }
    Ok(certs)
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

    /// Whether connections are encrypted (`amqps://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Opens a connection with `TCP_NODELAY` set on the socket (amiquip leaves Nagle on, which
/// costs ~40 ms per synchronous round trip), over TLS for an `amqps://` address.
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
        match open_at(address, addr) {
            Ok(connection) => return Ok(connection),
            Err(err) => last = err,
        }
    }
    Err(last)
}

fn open_at(address: &AmqpAddress, addr: &SocketAddr) -> Result<Connection, BusError> {
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
    match &address.tls {
        Some(tls) => Connection::open_tls_stream(
            tls.connector.clone(),
            &tls.server_name,
            stream,
            options,
            ConnectionTuning::default(),
        )
        .map_err(|e| BusError::Unavailable(format!("{addr}: {}", tls_failure(tls, &e)))),
        None => Connection::insecure_open_stream(stream, options, ConnectionTuning::default())
            .map_err(|e| {
                let why = if speaks_tls(addr) {
                    format!(
                        "the broker's port speaks TLS, not plain AMQP: use an amqps:// URL ({e})"
                    )
                } else {
                    e.to_string()
                };
                BusError::Unavailable(format!("{addr}: {why}"))
            }),
    }
}

/// Whether `addr` completes a TLS handshake (nothing verified, nothing sent after it): asked
/// only once a plain connection has failed, to say why. A TLS endpoint given AMQP's header
/// just resets the connection, which alone would not tell a TLS port from a broken broker.
fn speaks_tls(addr: &SocketAddr) -> bool {
    let Ok(connector) = native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .danger_accept_invalid_hostnames(true)
        .build()
    else {
        return false;
    };
    let Ok(socket) = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) else {
        return false;
    };
    let bounded = socket.set_read_timeout(Some(CONNECT_TIMEOUT)).is_ok()
        && socket.set_write_timeout(Some(CONNECT_TIMEOUT)).is_ok();
    bounded && connector.connect(&addr.ip().to_string(), socket).is_ok()
}

/// Says which check of a TLS connection failed, from OpenSSL's reason.
fn tls_failure(tls: &Tls, err: &amiquip::Error) -> String {
    tls_failure_text(&tls.server_name, tls.client_certificate, &err.to_string())
}

/// [`tls_failure`] from the error's text: `name` the server name checked, `client_certificate`
/// whether one was presented.
fn tls_failure_text(name: &str, client_certificate: bool, text: &str) -> String {
    let lower = text.to_lowercase();
    let why = if lower.contains("hostname mismatch") || lower.contains("ip address mismatch") {
        format!(
            "the broker's certificate is not issued for {name} (host name mismatch; \
             server_name_indication names another)"
        )
    } else if [
        "self-signed certificate",
        "self signed certificate",
        "unable to get local issuer certificate",
        "unable to verify the first certificate",
        "unable to get issuer certificate",
    ]
    .iter()
    .any(|reason| lower.contains(reason))
    {
        "the broker's certificate is not signed by a trusted authority (give its CA as \
         cacertfile)"
            .to_owned()
    } else if lower.contains("alert certificate required") {
        "the broker requires a client certificate (certfile and keyfile)".to_owned()
    } else if lower.contains("alert unknown ca") || lower.contains("alert bad certificate") {
        "the broker refused our client certificate (certfile: not signed by an authority it \
         trusts)"
            .to_owned()
    } else if lower.contains("connection reset") || lower.contains("broken pipe") {
        // Under TLS 1.3 the broker checks our certificate after the client has finished its
        // side of the handshake: its refusal (an alert, then the close) can reach us as a reset
        // of the connection we are already writing the AMQP header to, the alert unread.
        if client_certificate {
            "the broker closed the connection as the TLS handshake ended: it most likely \
             refused our client certificate (certfile: not signed by an authority it trusts)"
                .to_owned()
        } else {
            "the broker closed the connection as the TLS handshake ended: it most likely \
             requires a client certificate (certfile and keyfile)"
                .to_owned()
        }
    } else if lower.contains("certificate has expired") || lower.contains("not yet valid") {
        "the broker's certificate is outside its validity period".to_owned()
    } else if lower.contains("wrong version number")
        || lower.contains("packet length too long")
        || lower.contains("unexpected eof")
    {
        "the broker's port does not speak TLS (a plain amqp:// port?)".to_owned()
    } else {
        format!("TLS with {name} failed")
    };
    format!("{why}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal that arrives as a reset (the alert unread) still says what most likely failed.
    #[test]
    fn a_handshake_cut_by_a_reset_names_the_client_certificate() {
        let reset = "I/O error while writing socket: Connection reset by peer (os error 104)";
        let with = tls_failure_text("localhost", true, reset);
        assert!(with.contains("refused our client certificate"), "{with}");
        assert!(with.ends_with(reset), "the cause kept: {with}");
        let without = tls_failure_text("localhost", false, reset);
        assert!(
            without.contains("requires a client certificate"),
            "{without}"
        );
        let other = tls_failure_text("localhost", true, "something else");
        assert!(other.starts_with("TLS with localhost failed"), "{other}");
    }

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
        assert_eq!(parse("amqps://127.0.0.1").unwrap().port, 5671);
        assert!(parse("http://127.0.0.1").is_err());
        assert!(parse("amqp://127.0.0.1/a/b").is_err());
        assert!(parse("not a url").is_err());
        // Not resolved when parsed: a name that does not resolve (yet) is fine until connecting.
        let later = parse("amqp://app:S3cret@broker.invalid:5672/%2f").unwrap();
        assert_eq!(later.host, "broker.invalid");
        assert!(!format!("{later:?}").contains("S3cret"), "{later:?}");
    }
}
