//! Every API error is a status and `{"error": "..."}` saying what was wrong and what to do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchestrator_core::EngineError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Fields sent beside `error`, for a client to act on (the interrupted missions of a refused
    /// start, say).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            details: serde_json::Map::new(),
        }
    }

    /// With `value` sent as `field` beside the message (never replacing `error`).
    pub fn with_detail(mut self, field: &str, value: serde_json::Value) -> Self {
        if field != "error" {
            self.details.insert(field.to_string(), value);
        }
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn unknown_mission(id: &str) -> Self {
        Self::not_found(format!(
            "no mission `{id}` in the repositories this server knows; GET /api/missions lists them"
        ))
    }

    /// An engine refusal keeps the engine's own words: a usage problem (dirty tree, missing key,
    /// unreachable endpoint) is the request's fault, a busy repository a conflict.
    pub fn from_engine(error: &EngineError) -> Self {
        let status = match error {
            EngineError::Usage(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::Locked(_) | EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.details;
        body.insert("error".into(), serde_json::Value::String(self.message));
        let body = Json(serde_json::Value::Object(body));
        (self.status, body).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}
