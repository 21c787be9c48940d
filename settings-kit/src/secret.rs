//! URLs that carry passwords: held as [`SecretUrl`], whose `Debug` and `Display` show the
//! password as `***`, and parsed by clap value parsers whose errors never echo the input.

use std::fmt;

/// Query parameters whose values are shown: settings that are never secrets. Every other
/// parameter's value (`password`, which both PostgreSQL drivers accept, `sslpassword`, a
/// misspelling of either) is shown as `***`.
const PLAIN_PARAMETERS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "connect_timeout",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "heartbeat",
    "channel_max",
    "connection_timeout",
];

/// `text` with the password (and anything that could be one) replaced by `***`: the URL's own,
/// and the value of every query parameter not known to be plain. A URL that does not parse is
/// not shown at all past its scheme: its shape is unknown, so any part of it could be the
/// secret.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.has_host() => {
            if url.password().is_some() {
                // Fails only for URLs that cannot have a password, which this one has.
                let _ = url.set_password(Some("***"));
            }
            let secret = |key: &str| !PLAIN_PARAMETERS.contains(&key);
            if url.query_pairs().any(|(key, _)| secret(&key)) {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(key, value)| {
                        let shown = if secret(&key) { "***".into() } else { value };
                        (key.into_owned(), shown.into_owned())
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        _ => match text.split_once("://") {
            Some((scheme, _))
                if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                format!("{scheme}://***")
            }
            _ => "***".to_owned(),
        },
    }
}

/// A connection URL that may hold a password. [`SecretUrl::expose`] gives the real text for
/// connecting (on purpose, and greppable: it does not deref to `str`); it shows only the redacted
/// form ([`redact_url`]) when printed, so a `{:?}` of a config, a log line or an error message
/// cannot leak it.
///
/// ```
/// let url = settings_kit::SecretUrl::new("postgres://app:S3cret@db/orders");
/// assert_eq!(url.to_string(), "postgres://app:***@db/orders");
/// assert_eq!(url.expose(), "postgres://app:S3cret@db/orders");
/// ```
///
/// It is not a `str` by accident (no `Deref`), so the password is only ever reached by name:
///
/// ```compile_fail
/// let url = settings_kit::SecretUrl::new("postgres://app:S3cret@db/orders");
/// let text: &str = &url;
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL with its password, for connecting. Never print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", redact_url(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// A clap value parser for a [`SecretUrl`]: `check` validates the text; on failure the error
/// names the argument and the reason, and shows the value only redacted (clap's own message
/// would quote it whole).
#[cfg(feature = "cli")]
#[derive(Clone)]
pub struct SecretUrlParser {
    check: fn(&str) -> Result<(), String>,
}

#[cfg(feature = "cli")]
impl SecretUrlParser {
    /// A parser that accepts what `check` accepts.
    pub fn new(check: fn(&str) -> Result<(), String>) -> Self {
        SecretUrlParser { check }
    }
}

#[cfg(feature = "cli")]
impl clap::builder::TypedValueParser for SecretUrlParser {
    type Value = SecretUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SecretUrl, clap::Error> {
        let name = arg
            .and_then(|a| a.get_value_names().and_then(|n| n.first()).cloned())
            .map_or_else(|| "the URL".to_owned(), |n| n.to_string());
        let fail = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid {name}: {why}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| fail("not valid UTF-8".to_owned()))?;
        (self.check)(text).map_err(|why| fail(format!("{why} (got {})", redact_url(text))))?;
        Ok(SecretUrl::new(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://app:S3cret@db:5432/orders"),
            "postgres://app:***@db:5432/orders"
        );
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://app@db/orders"),
            "postgres://app@db/orders"
        );
        assert_eq!(
            redact_url("postgres://app:S3cret@db:99999/x"),
            "postgres://***"
        );
        assert_eq!(redact_url("app:S3cret@db"), "***");
        let in_query = redact_url("postgres://app@db/orders?sslmode=require&password=S3cret");
        assert!(!in_query.contains("S3cret"), "{in_query}");
        assert!(in_query.contains("sslmode=require") && in_query.contains("password=***"));
        let odd = redact_url("postgres://db/orders?PassWord=S3cret&sslpassword=K3y&passwrod=Typ0");
        assert!(
            !odd.contains("S3cret") && !odd.contains("K3y") && !odd.contains("Typ0"),
            "{odd}"
        );
        let url = SecretUrl::new("postgres://app:S3cret@db/orders");
        assert!(!format!("{url:?} {url}").contains("S3cret"));
        assert_eq!(url.expose(), "postgres://app:S3cret@db/orders");
    }
}
