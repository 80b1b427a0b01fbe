//! `/api/notifications/`: create, list, read, confirm and audit notifications.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::service::{BatchItem, SendInput, parse_timestamp};
use herald_core::store::{AuditEntry, IdempotencyKey, ListFilter};
use herald_core::{GroupName, Notification, NotificationId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, NotificationPath};

/// Default and maximum page sizes of the list.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 200;

/// Maximum length of an `Idempotency-Key` header, in bytes.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateRequest {
    /// 1 to 4,000 characters, at least one not white space; stored exactly as sent.
    pub content: Option<String>,
    /// The group to notify.
    pub receiver_group: Option<String>,
    /// low, normal (default), high or urgent.
    pub priority: Option<String>,
    /// Which of the caller's groups sends; required when several may.
    pub sender_group: Option<String>,
}

/// Creates a notification.
#[utoipa::path(
    post, path = "/api/notifications/", tag = "notifications",
    security(("bearer" = [])),
    request_body = CreateRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the original notification")),
    responses(
        (status = 201, body = Notification, headers(("Location" = String))),
        (status = 200, description = "Idempotent retry: the original notification", body = Notification),
        (status = 400, body = crate::routes::openapi::Problem),
        (status = 401, body = crate::routes::openapi::Problem),
        (status = 403, body = crate::routes::openapi::Problem),
        (status = 413, body = crate::routes::openapi::Problem),
        (status = 415, body = crate::routes::openapi::Problem),
        (status = 422, body = crate::routes::openapi::Problem),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateRequest>,
) -> ApiResult<Response> {
    let idempotency = idempotency_key(&headers, &body)?;
    let input = SendInput {
        content: body.content,
        receiver_group: body.receiver_group,
        priority: body.priority,
        sender_group: body.sender_group,
    };
    let sent = state.service.send(&caller, input, idempotency).await?;

    let location = format!("/api/notifications/{}/", sent.notification.id);
    let status = if sent.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(sent.notification)).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("an ASCII path"),
    );
    Ok(response)
}

fn idempotency_key(headers: &HeaderMap, body: &CreateRequest) -> ApiResult<Option<IdempotencyKey>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters, such as a UUID"),
            )
        })?;

    // The fingerprint covers every field that shapes the notification, so a retry matches and
    // a different request under the same key does not.
    let canonical = serde_json::json!([
        body.content,
        body.receiver_group,
        body.priority,
        body.sender_group
    ]);
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    let fingerprint = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        fingerprint,
    }))
}

/// Query parameters of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// pending or confirmed
    status: Option<String>,
    sender_group: Option<String>,
    receiver_group: Option<String>,
    /// low, normal, high or urgent
    priority: Option<String>,
    /// RFC 3339 with any offset, such as 2024-01-01T12:00:00+08:00
    created_after: Option<String>,
    created_before: Option<String>,
    /// true: only notifications the caller has not read
    unread: Option<String>,
    /// 1 to 200, default 50
    limit: Option<String>,
    /// Opaque cursor from the previous page's Link header
    cursor: Option<String>,
}

/// Lists visible notifications, newest first. A `Link: <...>; rel="next"` header points to the
/// next page when there is one.
#[utoipa::path(
    get, path = "/api/notifications/", tag = "notifications",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, body = [Notification], headers(("Link" = String, description = "Next page"))),
        (status = 401, body = crate::routes::openapi::Problem),
        (status = 422, body = crate::routes::openapi::Problem),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let filter = parse_filter(&params)?;
    let page_size = filter.limit;
    let mut rows = state
        .service
        .list(
            &caller,
            &ListFilter {
                limit: page_size + 1,
                ..filter
            },
        )
        .await?;

    let next = (rows.len() as u64 > page_size).then(|| {
        rows.truncate(page_size as usize);
        rows.last().map(|n| n.id)
    });
    let mut response = Json(rows).into_response();
    if let Some(Some(last_id)) = next {
        let mut query: Vec<(&str, String)> = params
            .iter()
            .filter(|(k, _)| k.as_str() != "cursor")
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        query.push(("cursor", encode_cursor(last_id)));
        let link = format!(
            "</api/notifications/?{}>; rel=\"next\"",
            serde_urlencoded::to_string(&query).map_err(|e| ApiError::Internal(e.into()))?
        );
        response.headers_mut().insert(
            header::LINK,
            HeaderValue::from_str(&link).map_err(|e| ApiError::Internal(e.into()))?,
        );
    }
    Ok(response)
}

fn parse_filter(params: &BTreeMap<String, String>) -> ApiResult<ListFilter> {
    let get = |key: &str| {
        params
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let group = |field: &'static str| -> ApiResult<Option<GroupName>> {
        get(field)
            .map(|v| {
                GroupName::parse(v).map_err(|e| ApiError::invalid(field, format!("{v:?} {e}")))
            })
            .transpose()
    };
    let time = |field: &'static str| -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
        let Some(raw) = get(field) else {
            return Ok(None);
        };
        // An unencoded "+08:00" arrives as " 08:00" because '+' means space in a query string.
        let repaired = raw.replace(' ', "+");
        parse_timestamp(field, &repaired)
            .map(Some)
            .map_err(ApiError::from)
    };

    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("{raw:?} must be a whole number from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let unread_only = match get("unread") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "unread",
                format!("{other:?} must be true or false"),
            ));
        }
    };

    Ok(ListFilter {
        status: get("status")
            .map(|v| {
                v.parse()
                    .map_err(|e| ApiError::invalid("status", format!("{v:?} {e}")))
            })
            .transpose()?,
        sender_group: group("sender_group")?,
        receiver_group: group("receiver_group")?,
        priority: get("priority")
            .map(|v| {
                v.parse()
                    .map_err(|e| ApiError::invalid("priority", format!("{v:?} {e}")))
            })
            .transpose()?,
        created_after: time("created_after")?,
        created_before: time("created_before")?,
        unread_only,
        before_id: get("cursor").map(decode_cursor).transpose()?,
        limit,
    })
}

/// Cursors are opaque to clients; today they carry the last id of the previous page.
fn encode_cursor(last_id: NotificationId) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{last_id}"))
}

fn decode_cursor(raw: &str) -> ApiResult<NotificationId> {
    URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("v1:").and_then(|id| id.parse().ok()))
        .ok_or_else(|| {
            ApiError::invalid(
                "cursor",
                "is not a cursor from this API; follow the Link header of the previous page",
            )
        })
}

/// Returns one notification.
#[utoipa::path(
    get, path = "/api/notifications/{id}/", tag = "notifications",
    security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Notification), (status = 404, body = crate::routes::openapi::Problem))
)]
pub async fn get_one(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    NotificationPath(id): NotificationPath,
) -> ApiResult<Json<Notification>> {
    Ok(Json(state.service.get(&caller, id).await?))
}

/// Confirms a notification. The first confirmation wins; the same user again gets 200.
#[utoipa::path(
    post, path = "/api/notifications/{id}/confirm/", tag = "notifications",
    security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = Notification),
        (status = 403, body = crate::routes::openapi::Problem),
        (status = 404, body = crate::routes::openapi::Problem),
        (status = 409, description = "Confirmed by somebody else; carries confirmed_by and confirmed_at", body = crate::routes::openapi::Problem),
    )
)]
pub async fn confirm(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    NotificationPath(id): NotificationPath,
) -> ApiResult<Json<Notification>> {
    Ok(Json(state.service.confirm(&caller, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct IdsRequest {
    /// Notification ids, at most 200.
    pub ids: Option<Vec<i64>>,
    /// For the read endpoint: mark every visible notification read.
    pub all: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchItem>,
}

/// Confirms several notifications; each id gets its own result.
#[utoipa::path(
    post, path = "/api/notifications/confirm/", tag = "notifications",
    security(("bearer" = [])),
    request_body = IdsRequest,
    responses((status = 200, body = BatchResponse), (status = 422, body = crate::routes::openapi::Problem))
)]
pub async fn confirm_batch(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<IdsRequest>,
) -> ApiResult<Json<BatchResponse>> {
    let ids = body
        .ids
        .ok_or_else(|| ApiError::invalid("ids", "is required: send {\"ids\": [1, 2, 3]}"))?;
    let results = state.service.confirm_batch(&caller, &ids).await?;
    Ok(Json(BatchResponse { results }))
}

/// Marks one notification read for the caller.
#[utoipa::path(
    post, path = "/api/notifications/{id}/read/", tag = "notifications",
    security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = crate::routes::openapi::Problem))
)]
pub async fn mark_read(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    NotificationPath(id): NotificationPath,
) -> ApiResult<StatusCode> {
    state.service.mark_read(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Updated {
    pub updated: u64,
}

/// Marks several notifications, or all, read for the caller.
#[utoipa::path(
    post, path = "/api/notifications/read/", tag = "notifications",
    security(("bearer" = [])),
    request_body = IdsRequest,
    responses((status = 200, body = Updated), (status = 422, body = crate::routes::openapi::Problem))
)]
pub async fn mark_many_read(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<IdsRequest>,
) -> ApiResult<Json<Updated>> {
    let updated = match (body.ids, body.all) {
        (Some(_), Some(true)) => {
            return Err(ApiError::invalid("all", "send either ids or all, not both"));
        }
        (Some(ids), _) => state.service.mark_many_read(&caller, Some(&ids)).await?,
        (None, Some(true)) => state.service.mark_many_read(&caller, None).await?,
        (None, _) => {
            return Err(ApiError::invalid(
                "ids",
                "is required: send {\"ids\": [1, 2]} or {\"all\": true}",
            ));
        }
    };
    Ok(Json(Updated { updated }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnreadCount {
    pub count: u64,
}

/// Counts the caller's unread notifications (those the caller sent are never unread).
#[utoipa::path(
    get, path = "/api/notifications/unread-count/", tag = "notifications",
    security(("bearer" = [])),
    responses((status = 200, body = UnreadCount))
)]
pub async fn unread_count(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> ApiResult<Json<UnreadCount>> {
    Ok(Json(UnreadCount {
        count: state.service.unread_count(&caller).await?,
    }))
}

/// The audit trail of a notification: created, read and confirmed, in time order.
#[utoipa::path(
    get, path = "/api/notifications/{id}/history/", tag = "notifications",
    security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = [AuditEntry]), (status = 404, body = crate::routes::openapi::Problem))
)]
pub async fn history(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    NotificationPath(id): NotificationPath,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    Ok(Json(state.service.history(&caller, id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        assert!(decode_cursor("bm9wZQ").is_err());
    }

    #[test]
    fn filter_accepts_offsets_and_decoded_plus() {
        let params: BTreeMap<String, String> = [(
            "created_after".to_string(),
            "2024-01-01T12:00:00 08:00".to_string(),
        )]
        .into_iter()
        .collect();
        let filter = parse_filter(&params).unwrap();
        assert_eq!(
            filter.created_after.unwrap().to_rfc3339(),
            "2024-01-01T04:00:00+00:00"
        );
    }

    #[test]
    fn filter_rejects_bad_limit() {
        let params: BTreeMap<String, String> = [("limit".to_string(), "500".to_string())]
            .into_iter()
            .collect();
        assert_eq!(parse_filter(&params).unwrap_err().code(), "invalid_field");
    }
}
