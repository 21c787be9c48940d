//! TLS to PostgreSQL, the same on every connection the store opens.
//!
//! The URL says what to check, as libpq's does: `sslmode` (`disable`, `prefer` — the default —,
//! `require`, `verify-full`) and `sslrootcert` (a PEM file of CA certificates, trusted besides
//! the system's roots). sqlx (event store, clients, relay, migrations) reads both itself, with
//! rustls. tokio-postgres (the read table) reads neither `verify-full` nor `sslrootcert`, so they
//! are taken off its URL here ([`TlsUrl::parse`]) and given to a rustls connector
//! ([`TlsUrl::connector`]) that checks exactly what sqlx checks:
//!
//! | `sslmode`     | encrypted             | certificate                           |
//! |---------------|-----------------------|---------------------------------------|
//! | `disable`     | no                    | –                                     |
//! | `prefer`      | if the server offers  | not checked                           |
//! | `require`     | yes, or no connection | not checked                           |
//! | `verify-full` | yes, or no connection | chain to a trusted root, and the host |
//!
//! A client certificate, for servers that authenticate by one (`hostssl … cert`), is given as
//! libpq gives it: `sslcert` (the certificate, PEM, with any intermediates after it) and
//! `sslkey` (its private key, PEM), both or neither. It is presented on every connection of both
//! drivers.
//!
//! A parameter the URL does not give is taken from the environment, as libpq and sqlx take it:
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`. Read here once, and handed to both
//! drivers from here (sqlx's own reading of the environment is overridden with the same
//! values), so the read side verifies and authenticates exactly as the write side does
//! (tokio-postgres reads none of them).
//!
//! `verify-ca` (the chain without the host name) is refused with a reason: sqlx 0.8.6 fails it
//! against current rustls (launchbadge/sqlx#3793: its verifier does not recognise rustls's
//! `NotValidForNameContext`), so it cannot mean the same on every connection.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_postgres::config::SslMode as TokioSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::StoreError;

/// How much of TLS a connection insists on (libpq's `sslmode`; `allow` is not offered: neither
/// client implements it; nor `verify-ca`, see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, unchecked; plain otherwise (libpq's and sqlx's default).
    Prefer,
    /// TLS or nothing; the certificate is not checked.
    Require,
    /// TLS with a certificate chain to a trusted root, issued for the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-full" => SslMode::VerifyFull,
            "verify-ca" => {
                return Err(
                    "sslmode=verify-ca is not supported (sqlx 0.8 cannot check a chain \
                            without the host name); use verify-full"
                        .into(),
                )
            }
            _ => return Err("sslmode must be disable, prefer, require or verify-full".into()),
        })
    }
}

/// The URL parameters either driver reads, besides the TLS ones handled here: sqlx's and
/// tokio-postgres's. Anything else is refused rather than passed on.
const CONNECT_PARAMETERS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
    "statement-cache-capacity",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "tcp_user_timeout",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// A PostgreSQL URL split into what tokio-postgres reads and the TLS parameters it does not.
#[derive(Debug, Clone)]
pub(crate) struct TlsUrl {
    /// The URL without `sslmode`, `sslrootcert`, `sslcert` and `sslkey`.
    pub(crate) rest: String,
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<PathBuf>,
    /// The client certificate (`sslcert`) and its key (`sslkey`).
    pub(crate) client: Option<(PathBuf, PathBuf)>,
}

impl TlsUrl {
    /// Splits `url`, with the process's `PGSSL*` variables for what it does not say. Errors
    /// name the parameter, never the URL (it may hold a password).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        Self::parse_with(url, |name| std::env::var(name).ok())
    }

    /// [`TlsUrl::parse`] with `env` for the environment.
    pub(crate) fn parse_with(
        url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            // sqlx would try any scheme as PostgreSQL, and fail on the wire. Only the scheme is
            // named: the rest may hold a password.
            let scheme = url.split_once("://").map_or("none", |(scheme, _)| scheme);
            return Err(format!(
                "not a PostgreSQL URL: it must start with postgres:// or postgresql:// \
                 (the scheme is {scheme})"
            ));
        }
        let mut parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        let mut mode = SslMode::Prefer;
        let mut given_mode = false;
        let mut root_cert = None;
        let (mut sslcert, mut sslkey) = (None, None);
        let mut rest = Vec::new();
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "sslmode" => {
                    mode = SslMode::parse(&value)?;
                    given_mode = true;
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
                "sslcert" => sslcert = Some(PathBuf::from(value.as_ref())),
                "sslkey" => sslkey = Some(PathBuf::from(value.as_ref())),
                known if CONNECT_PARAMETERS.contains(&known) => {
                    rest.push((key.into_owned(), value.into_owned()))
                }
                // sqlx would log it with its value (a misspelt `password`, say): refused here,
                // named, its value never shown.
                unknown => {
                    return Err(format!(
                        "unrecognised connection parameter {unknown:?} (its value is not shown)"
                    ))
                }
            }
        }
        let env = |name: &str| env(name).filter(|value| !value.is_empty());
        let cert = sslcert.or_else(|| env("PGSSLCERT").map(PathBuf::from));
        let key = sslkey.or_else(|| env("PGSSLKEY").map(PathBuf::from));
        let client = match (cert, key) {
            (Some(cert), Some(key)) => {
                // Fail at start-up: both files must read as what they are.
                read_certificates("sslcert", &cert)?;
                read_key(&key)?;
                Some((cert, key))
            }
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "sslcert and sslkey (or PGSSLCERT and PGSSLKEY) go together: a \
                            client certificate needs its key"
                        .into(),
                )
            }
        };
        if !given_mode {
            if let Some(value) = env("PGSSLMODE") {
                mode = SslMode::parse(&value).map_err(|reason| format!("PGSSLMODE: {reason}"))?;
            }
        }
        if root_cert.is_none() {
            root_cert = env("PGSSLROOTCERT").map(PathBuf::from);
        }
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        if let Some(path) = &root_cert {
            // Fail at start-up, not at the first connection: the file must hold certificates.
            read_certificates("sslrootcert", path)?;
        }
        Ok(TlsUrl {
            rest: parsed.into(),
            mode,
            root_cert,
            client,
        })
    }

    /// sqlx's options with exactly these TLS settings (sqlx also reads the URL and the
    /// environment itself; what it read is replaced by what was read here, the one source).
    pub(crate) fn apply_to_sqlx(
        &self,
        options: sqlx::postgres::PgConnectOptions,
    ) -> sqlx::postgres::PgConnectOptions {
        use sqlx::postgres::PgSslMode;
        let mut options = options.ssl_mode(match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
        if let Some(path) = &self.root_cert {
            options = options.ssl_root_cert(path);
        }
        if let Some((cert, key)) = &self.client {
            options = options.ssl_client_cert(cert).ssl_client_key(key);
        }
        options
    }

    /// tokio-postgres's own setting: it negotiates, the connector checks.
    pub(crate) fn tokio_mode(&self) -> TokioSslMode {
        match self.mode {
            SslMode::Disable => TokioSslMode::Disable,
            SslMode::Prefer => TokioSslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => TokioSslMode::Require,
        }
    }

    /// A rustls connector for tokio-postgres that checks what `sslmode` asks.
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        let builder = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked { provider })),
            SslMode::VerifyFull => {
                let mut roots = RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                for error in &native.errors {
                    tracing::warn!(%error, "a system root certificate could not be read");
                }
                roots.add_parsable_certificates(native.certs);
                if let Some(path) = &self.root_cert {
                    for cert in
                        read_certificates("sslrootcert", path).map_err(StoreError::misconfigured)?
                    {
                        roots.add(cert).map_err(tls_error)?;
                    }
                }
                let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(tls_error)?;
                builder.with_webpki_verifier(chain)
            }
        };
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    read_certificates("sslcert", cert).map_err(StoreError::misconfigured)?,
                    read_key(key).map_err(StoreError::misconfigured)?,
                )
                .map_err(|e| {
                    StoreError::misconfigured(format!(
                        "sslcert {} with sslkey {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?,
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

fn tls_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::misconfigured(format!("TLS to PostgreSQL: {err}"))
}

/// The certificates in a PEM file; an error names the parameter and the file (a path, not a
/// secret).
fn read_certificates(
    parameter: &str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{parameter} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{parameter} {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1); an error names the file, never its
/// content.
fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("sslkey {}: {e}", path.display()))
}

/// `prefer` and `require`: encryption without authentication, as in libpq and sqlx. The
/// handshake's signatures are still verified (the server holds the key of the certificate it
/// shows), the certificate itself is not.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_off_what_tokio_postgres_cannot_read() {
        let url = TlsUrl::parse(
            "postgres://u:pw@db.example:5432/orders?application_name=x&sslmode=verify-full",
        )
        .unwrap();
        assert_eq!(url.mode, SslMode::VerifyFull);
        assert_eq!(url.tokio_mode(), TokioSslMode::Require);
        assert_eq!(
            url.rest,
            "postgres://u:pw@db.example:5432/orders?application_name=x"
        );
        assert!(url.rest.parse::<tokio_postgres::Config>().is_ok());
        let plain = TlsUrl::parse("postgres://db/orders").unwrap();
        assert_eq!(plain.mode, SslMode::Prefer);
        assert_eq!(plain.rest, "postgres://db/orders");
    }

    #[test]
    fn the_environment_fills_in_what_the_url_does_not_say() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let from_env = TlsUrl::parse_with("postgres://db/x", env(&[("PGSSLMODE", "verify-full")]));
        assert_eq!(from_env.unwrap().mode, SslMode::VerifyFull);
        let url_wins = TlsUrl::parse_with(
            "postgres://db/x?sslmode=require",
            env(&[("PGSSLMODE", "verify-full")]),
        );
        assert_eq!(url_wins.unwrap().mode, SslMode::Require);
        let empty = TlsUrl::parse_with("postgres://db/x", env(&[("PGSSLMODE", "")]));
        assert_eq!(empty.unwrap().mode, SslMode::Prefer);
        let refused = TlsUrl::parse_with("postgres://db/x", env(&[("PGSSLMODE", "verify-ca")]));
        assert!(refused.unwrap_err().starts_with("PGSSLMODE: "));
        let missing = TlsUrl::parse_with(
            "postgres://db/x",
            env(&[("PGSSLROOTCERT", "/nonexistent.pem")]),
        );
        assert!(missing
            .unwrap_err()
            .starts_with("sslrootcert /nonexistent.pem"));
        for lone in [("PGSSLCERT", "/c.pem"), ("PGSSLKEY", "/k.pem")] {
            let err = TlsUrl::parse_with("postgres://db/x", |name| {
                (name == lone.0).then(|| lone.1.into())
            })
            .unwrap_err();
            assert!(err.contains("go together"), "{err}");
        }
        // A pair from the environment is read, and loses to one in the URL.
        let ca = settings_kit::testing::TestCa::new("tls-unit");
        let (env_pair, url_pair) = (ca.issue("from-env", &[]), ca.issue("from-url", &[]));
        let vars = |name: &str| match name {
            "PGSSLCERT" => Some(env_pair.cert.display().to_string()),
            "PGSSLKEY" => Some(env_pair.key.display().to_string()),
            _ => None,
        };
        let from_env = TlsUrl::parse_with("postgres://db/x", vars).unwrap();
        assert_eq!(
            from_env.client,
            Some((env_pair.cert.clone(), env_pair.key.clone()))
        );
        assert!(from_env.connector().is_ok());
        let url = format!(
            "postgres://db/x?sslcert={}&sslkey={}",
            url_pair.cert.display(),
            url_pair.key.display()
        );
        let from_url = TlsUrl::parse_with(&url, vars).unwrap();
        assert_eq!(from_url.client, Some((url_pair.cert, url_pair.key)));
        assert_eq!(from_url.rest, "postgres://db/x");
        // A key that is not the certificate's: refused when the connector is built.
        let crossed = TlsUrl::parse_with(
            &format!(
                "postgres://db/x?sslcert={}&sslkey={}",
                env_pair.cert.display(),
                from_url.client.as_ref().unwrap().1.display()
            ),
            |_| None,
        )
        .unwrap();
        let err = crossed.connector().err().unwrap().to_string();
        assert!(err.contains("sslcert"), "{err}");
        // A certificate where the key should be.
        let err = TlsUrl::parse_with(
            &format!(
                "postgres://db/x?sslcert={0}&sslkey={0}",
                env_pair.cert.display()
            ),
            |_| None,
        )
        .unwrap_err();
        assert!(err.starts_with("sslkey "), "{err}");
    }

    #[test]
    fn bad_tls_parameters_are_named_without_the_url() {
        let err = TlsUrl::parse("postgres://u:secret@db/x?sslmode=allow").unwrap_err();
        assert!(err.contains("sslmode must be"), "{err}");
        assert!(!err.contains("secret"));
        let err =
            TlsUrl::parse("postgres://u:secret@db/x?sslrootcert=/nonexistent.pem").unwrap_err();
        assert!(err.starts_with("sslrootcert /nonexistent.pem"), "{err}");
        assert!(!err.contains("secret"));
        let err = TlsUrl::parse("postgres://db/x?sslmode=verify-ca").unwrap_err();
        assert!(err.contains("use verify-full"), "{err}");
        let err = TlsUrl::parse("postgres://db/x?sslcert=/c.pem&sslkey=/k.pem").unwrap_err();
        assert!(err.starts_with("sslcert /c.pem"), "{err}");
        let err = TlsUrl::parse("mysql://u:secret@db/x").unwrap_err();
        assert!(err.contains("the scheme is mysql"), "{err}");
        assert!(!err.contains("secret"));
        assert!(TlsUrl::parse("postgresql://db/x").is_ok());
    }
}
