//! GraphQL errors carry `extensions.code`: `BAD_USER_INPUT`, `NOT_FOUND`, `CONFLICT`,
//! `INTERNAL_SERVER_ERROR` from resolvers; `UNAUTHENTICATED`, `FORBIDDEN`
//! and `BAD_REQUEST` from the HTTP layer; the codes of [`super::limits`] for
//! queries refused before they run.

use async_graphql::{Error, ErrorExtensions};

use crate::service::ServiceError;

pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const NOT_FOUND: &str = "NOT_FOUND";
pub const CONFLICT: &str = "CONFLICT";
pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const BAD_REQUEST: &str = "BAD_REQUEST";
/// A server without a token, asked under a host name it does not answer to (`host.rs`).
pub const FORBIDDEN: &str = "FORBIDDEN";

impl ErrorExtensions for ServiceError {
    fn extend(&self) -> Error {
        let (code, message) = match self {
            Self::BadInput(m) => (BAD_USER_INPUT, m.clone()),
            Self::NotFound(m) => (NOT_FOUND, m.clone()),
            Self::Conflict(m) => (CONFLICT, m.clone()),
            Self::Db(err) => {
                // The database's own words stay in the log.
                tracing::error!(error = %err, "GraphQL read failed");
                (INTERNAL, "the database failed; try again".to_owned())
            }
        };
        Error::new(message).extend_with(|_, e| e.set("code", code))
    }
}

/// A `BAD_USER_INPUT` error.
pub fn bad_input(message: impl Into<String>) -> Error {
    ServiceError::BadInput(message.into()).extend()
}
