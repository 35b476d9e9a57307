//! The only error type that reaches HTTP clients.
//!
//! 4xx bodies say what was wrong (a field name, a limit), never echoing personal data; 5xx
//! bodies say nothing internal. Every other error is turned into one of these at the edge of
//! a handler, after being logged with masked fields.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub type ApiResult<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong credentials")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// More events in one request than the configured batch cap.
    #[error("more than {limit} events in one request")]
    TooManyEvents { limit: usize },
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {problem}")]
    Unprocessable { field: String, problem: String },
    /// The database could not take the write: the sender should retry.
    #[error("temporarily unavailable, retry later")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The short machine-readable code, also used as a metrics label.
    pub fn code_name(&self) -> &'static str {
        self.code().1
    }

    fn code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::PayloadTooLarge { .. } | ApiError::TooManyEvents { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unprocessable { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.code();
        let mut body = json!({ "error": code, "message": self.to_string() });
        if let ApiError::Unprocessable { field, .. } = &self {
            body["field"] = json!(field);
        }
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::Unavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
