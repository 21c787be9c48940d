//! Errors of the store interfaces.
//!
//! A [`StoreError`] says what the caller should do (retry, fix a setting, look at the data), and
//! keeps what the driver or the database said as its [`source`](std::error::Error::source), with
//! the database's [`SqlState`] when there was one:
//!
//! ```
//! use order_store::{SqlClass, SqlState, StoreError};
//!
//! fn explain(err: &StoreError) -> &'static str {
//!     match err {
//!         _ if err.sql_state() == Some(SqlState::UNIQUE_VIOLATION) => "already there",
//!         StoreError::Misconfigured(_) => "fix the settings; retrying will not help",
//!         StoreError::Unavailable(_) => "try again later",
//!         StoreError::Rejected(_) if err.sql_class() == Some(SqlClass::DataException) => "bad data",
//!         _ => "look at the logs",
//!     }
//! }
//! assert_eq!(explain(&StoreError::unavailable("the database restarts")), "try again later");
//! ```

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use order_domain::BuyOrderError;

/// A driver's or a database's error, shared so that a [`StoreError`] stays `Clone`.
type Source = Arc<dyn Error + Send + Sync + 'static>;

/// A backend could not do its job. The variant says what to do about it; [`StoreError::sql_state`]
/// and `source()` say what the database and the driver said.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached, is restarting, overloaded or timed out: retry later (the
    /// pools reconnect by themselves). Services answer 503.
    Unavailable(Cause),
    /// A setting is wrong, and retrying with the same one fails the same way: the URL (scheme,
    /// `sslmode`), a certificate that cannot be trusted, the password, a database or schema that
    /// does not exist, a missing privilege (SQLSTATE classes 28, 3D, 3F and 42501).
    Misconfigured(Cause),
    /// The database refused a statement: a constraint (class 23, say a unique violation in a
    /// projection of yours), bad data (22), or SQL it cannot run (42). The same statement fails
    /// the same way; [`StoreError::sql_state`] says which.
    Rejected(Cause),
    /// Stored data could not be read back (a bug or a bad migration, not a passing fault).
    /// An event of a newer version than this build reads, or with no upcaster, is one: its
    /// `source()` is the reader's typed error.
    Corrupt(Cause),
    /// The connection failed while a commit was under way, and the store did not come back in
    /// time to tell whether it happened. A retry with the same idempotence key is exact: it
    /// answers the order if it was placed, and places it once if it was not.
    OutcomeUnknown(Cause),
}

impl StoreError {
    /// The backend is unavailable, in the store's own words (no driver error to keep).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(Cause::new(message))
    }

    /// A setting is wrong, in the store's own words.
    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self::Misconfigured(Cause::new(message))
    }

    /// Stored data is corrupt, in the store's own words.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::Corrupt(Cause::new(message))
    }

    /// The cause, whatever the variant.
    pub fn cause(&self) -> &Cause {
        match self {
            Self::Unavailable(c)
            | Self::Misconfigured(c)
            | Self::Rejected(c)
            | Self::Corrupt(c)
            | Self::OutcomeUnknown(c) => c,
        }
    }

    /// The database's SQLSTATE, when the database answered with an error.
    pub fn sql_state(&self) -> Option<SqlState> {
        self.cause().sql_state
    }

    /// The class of [`StoreError::sql_state`] (its first two characters), to match on.
    pub fn sql_class(&self) -> Option<SqlClass> {
        self.sql_state().map(|state| state.class())
    }

    /// Whether trying the same thing again may succeed: an outage, or an unknown outcome
    /// retried with the same idempotence key.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::OutcomeUnknown(_))
    }

    /// The exit status of a process that could not start because of this error, as the
    /// services use them: 2 when a setting is wrong (restarting with the same settings fails
    /// the same way, so a supervisor should not loop on it), 1 otherwise (an outage a restart
    /// may outlive).
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::Misconfigured(_) => 2,
            _ => 1,
        }
    }

    /// A driver's or the database's error as a store error, classed by what it says: its
    /// SQLSTATE when the database answered, otherwise its kind (a refused connection, a timeout
    /// and a broken socket are [`StoreError::Unavailable`]; a bad URL and a certificate that
    /// cannot be verified are [`StoreError::Misconfigured`]). The error is kept as the source.
    ///
    /// Knows sqlx's, tokio-postgres's and deadpool-postgres's errors, anywhere in the chain;
    /// anything else is `Unavailable`. Use it in a [`Projection`](crate::postgres::Projection)
    /// of yours: `tx.execute(..).await.map_err(StoreError::from_database)?`.
    pub fn from_database(err: impl Error + Send + Sync + 'static) -> Self {
        Self::from_boxed(Box::new(err))
    }

    /// A boxed error as a store error: itself if it is one, otherwise
    /// [`StoreError::from_database`]'s reading of it (cqrs-es hands errors boxed).
    pub(crate) fn from_boxed(err: Box<dyn Error + Send + Sync + 'static>) -> Self {
        match err.downcast::<StoreError>() {
            Ok(store) => *store,
            Err(err) => {
                // The chain's SQLSTATE is found once, by the cause; the class is read off it.
                let cause = Cause::because_boxed(err);
                match classify(&cause) {
                    Class::Outage => Self::Unavailable(cause),
                    Class::Setting => Self::Misconfigured(cause),
                    Class::Statement => Self::Rejected(cause),
                    Class::Data => Self::Corrupt(cause),
                }
            }
        }
    }

    /// This error with `context` said first: "{context}: {what it said}". Variant, SQLSTATE
    /// and source are kept.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        let cause = match &mut self {
            Self::Unavailable(c)
            | Self::Misconfigured(c)
            | Self::Rejected(c)
            | Self::Corrupt(c)
            | Self::OutcomeUnknown(c) => c,
        };
        cause.message = format!("{context}: {}", cause.message);
        self
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::Unavailable(_) => "store unavailable",
            Self::Misconfigured(_) => "store misconfigured",
            Self::Rejected(_) => "the database refused the statement",
            Self::Corrupt(_) => "stored data is corrupt",
            Self::OutcomeUnknown(_) => "outcome unknown",
        };
        write!(f, "{what}: {}", self.cause())
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause().source()
    }
}

/// What a [`StoreError`] says, and what it was caused by.
///
/// Its text names the whole chain (some drivers keep the reason, a certificate's say, out of
/// their own message), so a log line of the error alone says why; `source()` is the driver's
/// error itself, to downcast. Two causes are equal when they say the same thing with the same
/// SQLSTATE: the source is not compared.
#[derive(Clone)]
pub struct Cause {
    message: String,
    sql_state: Option<SqlState>,
    source: Option<Source>,
}

impl Cause {
    /// A cause in the store's own words, with no error under it.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            sql_state: None,
            source: None,
        }
    }

    /// A cause that is `err`: its text is the chain's, its SQLSTATE the database's, its source
    /// `err` itself.
    pub fn because(err: impl Error + Send + Sync + 'static) -> Self {
        Self::because_boxed(Box::new(err))
    }

    /// [`Cause::because`] for an error already boxed (cqrs-es hands them so).
    pub fn because_boxed(err: Box<dyn Error + Send + Sync + 'static>) -> Self {
        Self {
            message: chain_text(&*err),
            sql_state: find_sql_state(&*err),
            source: Some(Arc::from(err)),
        }
    }

    /// What it says.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The database's SQLSTATE, if it answered with an error.
    pub fn sql_state(&self) -> Option<SqlState> {
        self.sql_state
    }

    /// The driver's (or reader's) error under it.
    pub fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Cause");
        debug.field("message", &self.message);
        if let Some(state) = self.sql_state {
            debug.field("sql_state", &state);
        }
        if let Some(source) = &self.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message && self.sql_state == other.sql_state
    }
}

impl Eq for Cause {}

/// A PostgreSQL SQLSTATE: five characters, of which the first two are its [`SqlClass`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl SqlState {
    /// 23505: a unique index refused a second row with the same key.
    pub const UNIQUE_VIOLATION: SqlState = SqlState(*b"23505");
    /// 23503: a foreign key refused a row.
    pub const FOREIGN_KEY_VIOLATION: SqlState = SqlState(*b"23503");
    /// 23514: a `CHECK` refused a row.
    pub const CHECK_VIOLATION: SqlState = SqlState(*b"23514");
    /// 23502: a `NOT NULL` column was given none.
    pub const NOT_NULL_VIOLATION: SqlState = SqlState(*b"23502");
    /// 3D000: the database named in the URL does not exist.
    pub const INVALID_CATALOG_NAME: SqlState = SqlState(*b"3D000");
    /// 3F000: the schema named does not exist.
    pub const INVALID_SCHEMA_NAME: SqlState = SqlState(*b"3F000");
    /// 28P01: the password was refused.
    pub const INVALID_PASSWORD: SqlState = SqlState(*b"28P01");
    /// 42501: the role lacks a privilege.
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState(*b"42501");
    /// 42P01: a table named does not exist.
    pub const UNDEFINED_TABLE: SqlState = SqlState(*b"42P01");
    /// 40001: a serializable transaction lost a race; retry it.
    pub const SERIALIZATION_FAILURE: SqlState = SqlState(*b"40001");
    /// 57014: a statement was cancelled (`statement_timeout`, say).
    pub const QUERY_CANCELED: SqlState = SqlState(*b"57014");

    /// The SQLSTATE of a five-character code (`"23505"`); `None` for anything else.
    pub fn parse(code: &str) -> Option<SqlState> {
        let bytes: [u8; 5] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            .then_some(SqlState(bytes))
    }

    /// Its five characters.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.0).expect("parsed from ASCII")
    }

    /// Its class, the first two characters.
    pub fn class(&self) -> SqlClass {
        match &self.0[..2] {
            b"08" => SqlClass::ConnectionException,
            b"22" => SqlClass::DataException,
            b"23" => SqlClass::IntegrityConstraintViolation,
            b"25" => SqlClass::InvalidTransactionState,
            b"28" => SqlClass::InvalidCredentials,
            b"3D" => SqlClass::InvalidCatalogName,
            b"3F" => SqlClass::InvalidSchemaName,
            b"40" => SqlClass::TransactionRollback,
            b"42" => SqlClass::SyntaxErrorOrAccessRule,
            b"53" => SqlClass::InsufficientResources,
            b"54" => SqlClass::ProgramLimitExceeded,
            b"55" => SqlClass::ObjectNotInPrerequisiteState,
            b"57" => SqlClass::OperatorIntervention,
            b"58" => SqlClass::SystemError,
            b"P0" => SqlClass::PlpgsqlError,
            b"XX" => SqlClass::InternalError,
            _ => SqlClass::Other([self.0[0], self.0[1]]),
        }
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.code())
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The class of a [`SqlState`], as PostgreSQL's appendix "PostgreSQL Error Codes" groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SqlClass {
    /// 08: the connection failed.
    ConnectionException,
    /// 22: a value does not fit its type or range.
    DataException,
    /// 23: a constraint refused a row (unique, foreign key, check, not null).
    IntegrityConstraintViolation,
    /// 25: the transaction cannot do this now (a write on a read-only standby, say).
    InvalidTransactionState,
    /// 28: the credentials were refused (PostgreSQL: "invalid authorization specification").
    InvalidCredentials,
    /// 3D: the database does not exist.
    InvalidCatalogName,
    /// 3F: the schema does not exist.
    InvalidSchemaName,
    /// 40: the transaction was rolled back (serialization failure, deadlock): retry it.
    TransactionRollback,
    /// 42: SQL that cannot run (a syntax error, an undefined table, a missing privilege).
    SyntaxErrorOrAccessRule,
    /// 53: the server ran out of something (connections, memory, disk).
    InsufficientResources,
    /// 54: a limit of the server was exceeded.
    ProgramLimitExceeded,
    /// 55: an object is not in the state required (a lock not available, say).
    ObjectNotInPrerequisiteState,
    /// 57: an operator or a timeout intervened (shutdown, cancelled statement).
    OperatorIntervention,
    /// 58: a system error outside PostgreSQL (an I/O error).
    SystemError,
    /// P0: raised by PL/pgSQL.
    PlpgsqlError,
    /// XX: PostgreSQL's internal error.
    InternalError,
    /// Any other class, by its two characters.
    Other([u8; 2]),
}

/// What [`StoreError::from_database`] makes of an error.
enum Class {
    Outage,
    Setting,
    Statement,
    /// Only the drivers' decoding errors are data errors.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Data,
}

/// What a cause built from an error means: by its SQLSTATE, else by the kind of its source.
fn classify(cause: &Cause) -> Class {
    if let Some(state) = cause.sql_state {
        return match state.class() {
            _ if state == SqlState::INSUFFICIENT_PRIVILEGE => Class::Setting,
            SqlClass::InvalidCredentials
            | SqlClass::InvalidCatalogName
            | SqlClass::InvalidSchemaName => Class::Setting,
            SqlClass::IntegrityConstraintViolation
            | SqlClass::DataException
            | SqlClass::SyntaxErrorOrAccessRule => Class::Statement,
            _ => Class::Outage,
        };
    }
    let mut link = cause.source();
    while let Some(err) = link {
        #[cfg(feature = "postgres")]
        if let Some(err) = err.downcast_ref::<sqlx::Error>() {
            match err {
                sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => return Class::Setting,
                sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::Decode(_)
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::TypeNotFound { .. } => return Class::Data,
                _ => {}
            }
        }
        if is_certificate_error(err) {
            return Class::Setting;
        }
        link = err.source();
    }
    Class::Outage
}

/// A TLS certificate that cannot be verified: from rustls, under whichever driver.
fn is_certificate_error(err: &(dyn Error + 'static)) -> bool {
    #[cfg(feature = "postgres")]
    {
        if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                return is_certificate_error(inner);
            }
        }
    }
    let _ = err;
    false
}

/// The database's SQLSTATE, wherever it is in the chain.
fn find_sql_state(err: &(dyn Error + 'static)) -> Option<SqlState> {
    let mut link = Some(err);
    while let Some(err) = link {
        #[cfg(feature = "postgres")]
        {
            if let Some(sqlx::Error::Database(db)) = err.downcast_ref::<sqlx::Error>() {
                if let Some(state) = db.code().and_then(|c| SqlState::parse(&c)) {
                    return Some(state);
                }
            }
            if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
                if let Some(state) = pg.code().and_then(|c| SqlState::parse(c.code())) {
                    return Some(state);
                }
            }
            if let Some(db) = err.downcast_ref::<tokio_postgres::error::DbError>() {
                if let Some(state) = SqlState::parse(db.code().code()) {
                    return Some(state);
                }
            }
            if let Some(deadpool_postgres::PoolError::Backend(pg)) =
                err.downcast_ref::<deadpool_postgres::PoolError>()
            {
                if let Some(state) = pg.code().and_then(|c| SqlState::parse(c.code())) {
                    return Some(state);
                }
            }
        }
        link = err.source();
    }
    None
}

/// The error's text followed by each cause's that it does not already say.
fn chain_text(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

/// The mark an event store puts on a commit that failed in a way that leaves its outcome
/// unknown (the connection broke while the transaction was under way, perhaps after the
/// server received COMMIT). Carried as `AggregateError::UnexpectedError`; the writer resolves it
/// by retrying the same command ([`crate::CqrsOrderWriter`]).
#[derive(Debug, thiserror::Error)]
#[error("commit outcome unknown: {0}")]
pub struct CommitInDoubt(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Why an order was not placed. Nothing was stored, except that with
/// `Store(StoreError::OutcomeUnknown)` it may have been (retry with the same key to know).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
    /// The domain refused it: key reused, no price, over the cap, out of range.
    #[error(transparent)]
    Refused(#[from] BuyOrderError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The page's `last_reference` names no order in the read table.
    #[error("last_reference {0} names no order")]
    UnknownReference(order_domain::OrderId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
