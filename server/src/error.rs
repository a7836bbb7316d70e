//! The server's one error type: every failure of an HTTP handler or of startup, mapped to an HTTP
//! status and a JSON body, with details logged through `tracing`.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use eddy_core::server::StorageError;

/// Why a request or the server failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// The request is malformed or its fields are out of range (400).
    BadRequest(String),
    /// Credentials or tokens are missing, wrong, expired or revoked (401).
    Unauthorized(String),
    /// The admin key is wrong (403).
    Forbidden(String),
    /// The resource already exists, such as an email already registered (409).
    Conflict(String),
    /// The resource asked for does not exist, such as a server version past the history (404).
    NotFound(String),
    /// Durable storage failed (500; details are logged, not sent).
    Storage(String),
    /// Something else failed inside the server (500; details are logged, not sent).
    Internal(String),
}

impl ServerError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ServerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServerError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServerError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServerError::Conflict(_) => StatusCode::CONFLICT,
            ServerError::NotFound(_) => StatusCode::NOT_FOUND,
            ServerError::Storage(_) | ServerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ServerError::BadRequest(_) => "bad_request",
            ServerError::Unauthorized(_) => "unauthorized",
            ServerError::Forbidden(_) => "forbidden",
            ServerError::Conflict(_) => "conflict",
            ServerError::NotFound(_) => "not_found",
            ServerError::Storage(_) => "storage",
            ServerError::Internal(_) => "internal",
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::BadRequest(m)
            | ServerError::Unauthorized(m)
            | ServerError::Forbidden(m)
            | ServerError::Conflict(m)
            | ServerError::NotFound(m) => f.write_str(m),
            ServerError::Storage(m) => write!(f, "storage failed: {m}"),
            ServerError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<rusqlite::Error> for ServerError {
    fn from(e: rusqlite::Error) -> Self {
        ServerError::Storage(e.to_string())
    }
}

impl From<StorageError> for ServerError {
    fn from(e: StorageError) -> Self {
        ServerError::Storage(e.0)
    }
}

impl From<std::io::Error> for ServerError {
    fn from(e: std::io::Error) -> Self {
        ServerError::Internal(e.to_string())
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            "the server failed; see its log".to_string()
        } else {
            tracing::debug!(error = %self, "request refused");
            self.to_string()
        };
        let body = serde_json::json!({ "error": self.code(), "message": message });
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_keep_their_message_and_server_errors_hide_it() {
        let e = ServerError::Conflict("email \"a@b\" is already registered".into());
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(e.to_string(), "email \"a@b\" is already registered");
        let e = ServerError::Storage("disk full".into());
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            e.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
