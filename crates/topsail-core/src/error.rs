/*!
The one error type of the engine. Every variant maps to a fixed HTTP status
and body in `topsail-blueprints`; only [`Error::Store`] is a server fault.
*/

/// A Waterline usage-error code: the `code` of a 400 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UsageCode {
    /// Create: a missing, mistyped or invalid value.
    InvalidNewRecord,
    /// Update: a mistyped or invalid value to set.
    InvalidValuesToSet,
    /// `where`, `limit`, `skip`, `sort`, `select`, `omit`, or an id of the
    /// wrong type.
    InvalidCriteria,
    /// `populate` names something that is not an association.
    InvalidPopulates,
    /// `replace` / `add` / `remove` ids of the wrong type.
    InvalidAssociatedIds,
    /// The request body or query string could not be parsed at all.
    InvalidRequest,
}

impl UsageCode {
    /// The stable code string sent to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageCode::InvalidNewRecord => "E_INVALID_NEW_RECORD",
            UsageCode::InvalidValuesToSet => "E_INVALID_VALUES_TO_SET",
            UsageCode::InvalidCriteria => "E_INVALID_CRITERIA",
            UsageCode::InvalidPopulates => "E_INVALID_POPULATES",
            UsageCode::InvalidAssociatedIds => "E_INVALID_ASSOCIATED_IDS",
            UsageCode::InvalidRequest => "E_INVALID_REQUEST",
        }
    }
}

/// A failure reported by a [`Store`](crate::store::Store).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique index was violated (what `sqlx`'s `ErrorKind::UniqueViolation`
    /// reports), with the columns of its key.
    #[error("unique constraint violated on {columns:?}")]
    Unique {
        /// The columns of the violated key, as the store named them (empty
        /// when the database did not say).
        columns: Vec<String>,
    },
    /// Every connection stayed busy past the pool's wait (the server is
    /// overloaded): answered 503 with `Retry-After`.
    #[error("no database connection became free in time")]
    Unavailable,
    /// The connection to the database failed (the server restarted or
    /// went away): answered 503 with `Retry-After`. Reads were already run
    /// once more on a checked connection.
    #[error("the database connection failed")]
    ConnectionLost(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A statement ran past the database's statement timeout: answered 504.
    #[error("a statement ran past the statement timeout")]
    Timeout,
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An error from a topsail operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request was malformed: answered 400 `{code, details, message}`.
    #[error("{}: {details}", code.as_str())]
    Usage {
        /// The Waterline code.
        code: UsageCode,
        /// What was wrong, in words.
        details: String,
    },
    /// A uniqueness constraint would be violated: answered 400 `E_UNIQUE`.
    #[error("would violate uniqueness constraint on `{model}` ({attrs:?})")]
    Unique {
        /// The model identity.
        model: &'static str,
        /// The attributes involved.
        attrs: Vec<String>,
    },
    /// The record does not exist (or the caller may not know it does):
    /// answered 404.
    #[error("not found")]
    NotFound,
    /// An access rule refused the request: answered 403.
    #[error("forbidden")]
    Forbidden,
    /// The record changed since the client read it: its `If-Match` names
    /// none of the record's current entity tags. Answered 412 with the
    /// record as the client may read it now, and its `ETag`.
    #[error("precondition failed: the record has changed")]
    PreconditionFailed {
        /// The record as it is now, as the client is answered with it.
        current: Box<crate::record::Record>,
    },
    /// The model requires `If-Match` on its writes and the request sent
    /// none: answered 428 `E_PRECONDITION_REQUIRED`.
    #[error("precondition required: send If-Match with the record's ETag")]
    PreconditionRequired,
    /// The store failed: answered 500 and logged.
    #[error(transparent)]
    Store(StoreError),
    /// A record did not fit the model struct (a schema out of step with
    /// the code): answered 500 and logged.
    #[error(transparent)]
    Decode(#[from] crate::typed::DecodeError),
}

impl Error {
    /// A usage error with `code` and `details`.
    pub fn usage(code: UsageCode, details: impl Into<String>) -> Self {
        Error::Usage {
            code,
            details: details.into(),
        }
    }

    /// An `E_INVALID_CRITERIA` error.
    pub fn criteria(details: impl Into<String>) -> Self {
        Error::usage(UsageCode::InvalidCriteria, details)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

/// A `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
