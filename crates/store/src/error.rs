//! The crate's one error type, split by who is at fault.

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No row with that id is visible in the caller's scope (another tenant's row is reported
    /// the same way, so ids cannot be probed across tenants).
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    /// A uniqueness rule was violated (for example a duplicate name within a tenant).
    #[error("{field} already exists")]
    Conflict { field: &'static str },
    /// The caller passed a value this layer refuses; `field` names it for the API's problem body.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A stored secret could not be decrypted: wrong `RIPT_SECRET_KEY` or a tampered row.
    #[error("stored secret in {column} cannot be decrypted (wrong key or corrupted value)")]
    Decrypt { column: &'static str },
    /// The secret key from the environment is missing or malformed.
    #[error("secret key: {0}")]
    Key(&'static str),
    /// A row read back does not fit the model (a hand-edited or foreign database).
    #[error("stored value in {column} is malformed")]
    Corrupt { column: &'static str },
    /// Applying the migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database refused or the connection failed.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Maps a driver error, turning unique-constraint violations into [`Error::Conflict`] on
/// `field` (each table has one user-facing unique key; others are generated ids or hashes).
pub(crate) fn db(field: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| match &e {
        sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            Error::Conflict { field }
        }
        _ => Error::Database(e),
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
