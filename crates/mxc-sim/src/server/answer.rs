//! Answers as the real API writes them: `{"code", "message"}` errors, and JSON bodies.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

pub(super) fn json_error(status: StatusCode, message: &str) -> Response {
    ApiError::new(status, message).into_response()
}

/// An error answer: `{"code": status, "message": …}`, as the real API sends them.
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.status.as_u16(), "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

pub(super) fn json_body(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
