//! `ApiError`: the one error every HTTP route answers with, rendered as the documented
//! `{"error": {"code", "message"[, "field"]}}` body and status.

use axum::extract::rejection::PathRejection;
use axum::http::header::{HeaderName, HeaderValue};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use serde::Serialize;
use utoipa::ToSchema;

use super::code::ErrorCode;
use crate::backend::{BrokerError, HistoryError, PresenceError};
use crate::ingest::FieldError;
use crate::plugin::PluginError;

/// Every refusal and failure: `{"error": {"code", "message"[, "field"]}}`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_field", "field": "event", "message": "missing field `event`"}}))]
pub(super) struct ErrorBody<'a> {
    pub(super) error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ErrorDetail<'a> {
    /// Stable, machine-readable (docs/PROTOCOL.md, Error codes).
    pub(super) code: ErrorCode,
    /// The request field at fault, for `invalid_field`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) field: Option<&'a str>,
    /// For people; its wording may change.
    pub(super) message: &'a str,
}

/// A refused or failed HTTP request.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub(crate) struct ApiError {
    /// The code's own status, except for `denied` (the auth plugin's choice).
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// The request field at fault, for `invalid_field`.
    field: Option<Box<str>>,
    /// One extra response header (`Sec-WebSocket-Version` on 426).
    header: Option<Box<(HeaderName, HeaderValue)>>,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status: code.status(), code, message: message.into(), field: None, header: None }
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// The auth plugin's refusal, with the status it chose (401 or 403).
    pub(crate) fn denied(status: u16, reason: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(status).ok().filter(|s| ErrorCode::Denied.allows(*s));
        Self { status: status.unwrap_or(StatusCode::FORBIDDEN), ..Self::new(ErrorCode::Denied, reason) }
    }

    pub(crate) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.header = Some(Box::new((name, value)));
        self
    }

    pub(crate) fn code(&self) -> ErrorCode {
        self.code
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The message without the code.
    pub(crate) fn message(&self) -> &str {
        &self.message
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
        Self { field: Some(e.field.into()), ..Self::new(ErrorCode::InvalidField, e.message) }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::new(ErrorCode::BadRequest, e.body_text())
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        Self::new(ErrorCode::BrokerUnavailable, e.to_string())
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        Self::new(ErrorCode::HistoryUnavailable, e.to_string())
    }
}

impl From<PresenceError> for ApiError {
    fn from(e: PresenceError) -> Self {
        Self::new(ErrorCode::PresenceUnavailable, e.to_string())
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Invalid { .. } => Self::new(ErrorCode::InvalidPlugin, e.to_string()),
            PluginError::NoPrevious(_) | PluginError::NotInstalled(_) => Self::new(ErrorCode::NoPlugin, e.to_string()),
            _ => Self::new(ErrorCode::PluginError, e.to_string()),
        }
    }
}
