//! The gateway's one error type and its `application/problem+json` (RFC 9457) rendering.
//!
//! Turning an error into a response has no side effects, except that an internal error's cause
//! is logged once, inside the request span, and never sent to the client.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::service::ServiceError;
use herald_core::store::StoreError;
use serde_json::{Map, Value, json};

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed_json`: the body is not valid JSON.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// 401 `unauthorized`: missing, malformed, badly signed or expired token, or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `forbidden`.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409 `already_confirmed`, with the winner's confirmed_by and confirmed_at.
    #[error("notification was already confirmed by {by}")]
    AlreadyConfirmed {
        by: String,
        at: String,
        notification: Box<Value>,
    },
    /// 413 `payload_too_large`.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415 `unsupported_media_type`.
    #[error("request body must be sent with Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422 with a `code` such as `invalid_field` or `unknown_group`, naming the field.
    #[error("{field}: {message}")]
    Unprocessable {
        code: &'static str,
        field: Cow<'static, str>,
        message: String,
        extra: Option<(&'static str, Value)>,
    },
    /// 404 `not_found`: a route that the configuration turned off, with the reason.
    #[error("{0}")]
    Disabled(String),
    /// 426 `upgrade_required`: a plain HTTP request to a WebSocket endpoint.
    #[error("{0}")]
    UpgradeRequired(String),
    /// 503 `unavailable`: the database cannot be reached; retry later.
    #[error("service temporarily unavailable")]
    Unavailable(#[source] StoreError),
    /// 500 `internal`: a bug. The cause is logged, the client sees nothing of it.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn invalid(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            code: "invalid_field",
            field: field.into(),
            message: message.into(),
            extra: None,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::Disabled(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::AlreadyConfirmed { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) | ApiError::Disabled(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::AlreadyConfirmed { .. } => "already_confirmed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unprocessable { code, .. } => code,
            ApiError::UpgradeRequired(_) => "upgrade_required",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The problem document's members.
    pub fn problem(&self) -> Map<String, Value> {
        let status = self.status();
        let code = self.code();
        let mut body = json!({
            "type": format!("urn:herald:problem:{code}"),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
            "code": code,
        });
        let members = body.as_object_mut().expect("a JSON object");
        match self {
            ApiError::Unprocessable { field, extra, .. } => {
                members.insert("field".into(), json!(field));
                if let Some((name, value)) = extra {
                    members.insert((*name).into(), value.clone());
                }
            }
            ApiError::AlreadyConfirmed {
                by,
                at,
                notification,
            } => {
                members.insert("confirmed_by".into(), json!(by));
                members.insert("confirmed_at".into(), json!(at));
                members.insert("notification".into(), (**notification).clone());
            }
            _ => {}
        }
        std::mem::take(members)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, cause = ?cause, "request failed")
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, cause = ?std::error::Error::source(cause), "database unavailable")
            }
            other => tracing::debug!(
                status = other.status().as_u16(),
                code = other.code(),
                "request rejected"
            ),
        }

        let status = self.status();
        let mut response = (status, Json(Value::Object(self.problem()))).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { .. } => ApiError::Unavailable(error),
            StoreError::Internal { .. } => ApiError::Internal(Box::new(error)),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid { field, message } => ApiError::invalid(field, message),
            ServiceError::UnknownGroup { field, group } => ApiError::Unprocessable {
                code: "unknown_group",
                field: field.into(),
                message: format!("group {group:?} does not exist"),
                extra: None,
            },
            ServiceError::SenderGroupRequired { receiver, choices } => ApiError::Unprocessable {
                code: "sender_group_required",
                field: "sender_group".into(),
                message: format!(
                    "several of your groups may send to {receiver}; set sender_group to one of: {}",
                    choices.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ")
                ),
                extra: Some(("choices", json!(choices))),
            },
            ServiceError::Forbidden(message) => ApiError::Forbidden(message),
            ServiceError::NotFound => ApiError::NotFound("notification not found".into()),
            ServiceError::AlreadyConfirmed(notification) => ApiError::AlreadyConfirmed {
                by: notification.confirmed_by.as_ref().map(ToString::to_string).unwrap_or_default(),
                at: notification.confirmed_at.map(|t| json_time(&t)).unwrap_or_default(),
                notification: Box::new(serde_json::to_value(&*notification).unwrap_or(Value::Null)),
            },
            ServiceError::IdempotencyKeyReused => ApiError::Unprocessable {
                code: "idempotency_key_reused",
                field: "Idempotency-Key".into(),
                message: "this key was already used for a different request; use a new key for a new notification"
                    .into(),
                extra: None,
            },
            ServiceError::Store(e) => e.into(),
        }
    }
}

/// Formats a timestamp exactly as the JSON responses do.
fn json_time(at: &chrono::DateTime<chrono::Utc>) -> String {
    serde_json::to_value(at)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub type ApiResult<T> = Result<T, ApiError>;
