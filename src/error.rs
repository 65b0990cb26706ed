//! The application's error type: what went wrong in terms a client can act on. Transports map
//! it to an HTTP status and `{"error":{"code","message"}}`, or to a socket `error` event.

/// A refused or failed operation. Every variant carries a stable machine-readable code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad input: the field (or parameter) and what is wrong with it.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// Missing, malformed or expired credentials.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// Authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown, or not visible to this user (the two look the same on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is valid but the current state forbids it; nothing changed.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A limit on connections (or another resource) is reached; nothing was opened.
    #[error("{message}")]
    Limit { code: &'static str, message: String },
    /// Too many requests; retry after the given seconds.
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    /// A service we depend on (the database) does not answer now; retrying later may work.
    /// Nothing was changed. Details are logged, not shown.
    #[error("the database is unavailable; try again shortly")]
    Unavailable(String),
    /// A fault on our side; details are logged, not shown.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden(message.into())
    }

    /// The stable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { code, .. }
            | Error::Unauthorized { code, .. }
            | Error::Conflict { code, .. }
            | Error::Limit { code, .. } => code,
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::RateLimited(_) => "rate_limited",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }
}
