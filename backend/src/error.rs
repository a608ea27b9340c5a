//! The backend's one error type, and its single mapping to what clients see.
//!
//! Every service returns [`Error`]. The GraphQL layer turns it into an error with a machine-readable
//! `code` extension, the REST layer into a 4xx/5xx JSON body. Internal causes (database, I/O) are logged
//! with an incident id and never shown to clients.

use async_graphql::ErrorExtensions;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::InvalidValue;

/// What a service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authentication required")]
    Unauthenticated,
    #[error("invalid or expired token")]
    InvalidToken,
    /// Wrong login or password: deliberately never says which.
    #[error("invalid login or password")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Validation(#[from] InvalidValue),
    #[error("{0}")]
    Conflict(String),
    /// The server is at a capacity limit; the client may retry shortly.
    #[error("{0}")]
    Unavailable(String),
    #[error("too many failed attempts; retry in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The result of a service call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The machine-readable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated | Error::InvalidToken | Error::InvalidCredentials => {
                "UNAUTHENTICATED"
            }
            Error::Forbidden(_) => "FORBIDDEN",
            Error::NotFound(_) => "NOT_FOUND",
            Error::Validation(_) => "VALIDATION",
            Error::Conflict(_) => "CONFLICT",
            Error::RateLimited { .. } => "RATE_LIMITED",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::Database(_) | Error::Internal(_) => "INTERNAL",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated | Error::InvalidToken | Error::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see; internal causes are logged here and replaced.
    pub fn public_message(&self) -> String {
        match self {
            Error::Database(_) | Error::Internal(_) => {
                let incident = uuid::Uuid::new_v4();
                tracing::error!(%incident, error = %self, cause = ?self, "internal error");
                format!("internal error (incident {incident})")
            }
            other => other.to_string(),
        }
    }

    pub(crate) fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
    }

    /// `CONFLICT` with `message` when `error` is a unique-constraint violation (on either engine), else
    /// the database error itself.
    pub(crate) fn on_unique(error: sea_orm::DbErr, message: &str) -> Self {
        match error.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                Error::Conflict(message.to_owned())
            }
            _ => Error::Database(error),
        }
    }
}

impl ErrorExtensions for Error {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.public_message()).extend_with(|_, ext| {
            ext.set("code", self.code());
            if let Error::Validation(invalid) = self {
                ext.set("field", invalid.field);
            }
            if let Error::RateLimited {
                retry_after_seconds,
            } = self
            {
                ext.set("retryAfterSeconds", *retry_after_seconds);
            }
        })
    }
}

/// Turns a service result into a GraphQL one that keeps the error code.
///
/// async-graphql converts any `Display` error with `?`, silently dropping the code; resolvers call
/// `.gql()?` instead.
pub trait GqlResult<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResult<T> for Result<T> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| e.extend())
    }
}

/// A JSON error body: `{"error": {"code": "...", "message": "..."}}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut response = json_error(self.status(), self.code(), &self.public_message());
        if let Error::RateLimited {
            retry_after_seconds,
        } = self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_seconds),
            );
        }
        response
    }
}
