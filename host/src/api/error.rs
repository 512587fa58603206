//! `ApiError`: the one error every HTTP route answers with, rendered as the documented
//! `{"error": {"code", "message"[, "field"]}}` body and status.

use axum::extract::rejection::PathRejection;
use axum::http::header::{HeaderName, HeaderValue};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::openapi::{ErrorBody, ErrorDetail};

use crate::backend::{BrokerError, HistoryError, PresenceError};
use crate::ingest::FieldError;
use crate::plugin::PluginError;

/// A refused or failed HTTP request.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The request field at fault, for `invalid_field`.
    field: Option<Box<str>>,
    /// One extra response header (`Sec-WebSocket-Version` on 426).
    header: Option<Box<(HeaderName, HeaderValue)>>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, header: None }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub(crate) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.header = Some(Box::new((name, value)));
        self
    }

    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = ErrorDetail { code: self.code, field: self.field.as_deref(), message: &self.message };
        let body = serde_json::to_vec(&ErrorBody { error: detail }).expect("an error body serializes");
        let mut res = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some((name, value)) = self.header.map(|h| *h) {
            res.headers_mut().insert(name, value);
        }
        res
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self { field: Some(e.field.into()), ..Self::bad_request("invalid_field", e.message) }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request("bad_request", e.body_text())
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        Self::unavailable("broker_unavailable", e.to_string())
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        Self::unavailable("history_unavailable", e.to_string())
    }
}

impl From<PresenceError> for ApiError {
    fn from(e: PresenceError) -> Self {
        Self::unavailable("presence_unavailable", e.to_string())
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Invalid { .. } => Self::bad_request("invalid_plugin", e.to_string()),
            PluginError::NoPrevious(_) | PluginError::NotInstalled(_) => {
                Self::new(StatusCode::CONFLICT, "no_plugin", e.to_string())
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "plugin_error", e.to_string()),
        }
    }
}
