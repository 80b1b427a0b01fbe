//! Request extractors that reject bad input with problem documents naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use herald_core::NotificationId;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Maximum request body size, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body. Unlike `axum::Json`, its rejections are problem documents: 415 for a missing or
/// wrong content type, 413 over [`MAX_BODY_BYTES`], 400 for malformed JSON, and 422 naming the
/// field for a value of the wrong type.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }

        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })?;

        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, telling syntax errors (400) from values of the wrong shape (422 with the path).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first, so that a truncated body is a 400 and not a type error.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }

    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        ApiError::invalid(field, e.into_inner().to_string())
    })
}

fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The `{id}` path segment of a notification route. Anything that is not an id in the `i64`
/// range cannot name a notification, so it is answered 404 like an unknown id.
pub struct NotificationPath(pub NotificationId);

impl<S: Send + Sync> FromRequestParts<S> for NotificationPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::NotFound("notification not found".into()))?;
        raw.parse::<NotificationId>()
            .ok()
            .filter(|id| *id > 0)
            .map(NotificationPath)
            .ok_or_else(|| ApiError::NotFound("notification not found".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        content: Option<String>,
    }

    #[test]
    fn json_content_types() {
        let value = |s: &'static str| header::HeaderValue::from_static(s);
        assert!(is_json(Some(&value("application/json"))));
        assert!(is_json(Some(&value("application/json; charset=utf-8"))));
        assert!(is_json(Some(&value("application/merge-patch+json"))));
        assert!(!is_json(Some(&value("text/plain"))));
        assert!(!is_json(None));
    }

    #[test]
    fn wrong_type_names_the_field() {
        let error = parse_json::<Body>(br#"{"content": 5}"#).unwrap_err();
        let problem = error.problem();
        assert_eq!(problem["field"], "content");
        assert_eq!(problem["status"], 422);
    }

    #[test]
    fn syntax_error_is_malformed() {
        let error = parse_json::<Body>(br#"{"content": "#).unwrap_err();
        assert_eq!(error.code(), "malformed_json");
    }
}
