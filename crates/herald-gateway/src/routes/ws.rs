//! WebSocket handshakes: `GET /ws/notifications/{group}/` streams one group and
//! `GET /ws/notifications/` streams all of the caller's groups.
//!
//! Everything that can refuse a socket is checked before the upgrade, so the client gets an HTTP
//! status: 403 for a browser origin that is not allowed, 401 without a valid token, 404 for an
//! unknown group, 403 for a group the caller does not belong to, 426 for a request that is not a
//! WebSocket upgrade, and 503 when storage cannot tell where the group's stream is. A `since`
//! that cannot be used is not a reason to refuse: the socket opens and gets an error frame.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Utf8Bytes, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use herald_core::GroupName;
use herald_core::store::StoreError;
use serde_json::json;

use crate::app::AppState;
use crate::auth::{Verified, bearer_token};
use crate::error::ApiError;
use crate::realtime::outbox::outbox;
use crate::realtime::protocol::{self, CommandError};
use crate::realtime::session::{self, GroupStart, SessionSetup};

/// The largest message the transport reads at all. Messages between the 64 KiB command limit and
/// this are read and then rejected with close code 1009; larger ones fail in the transport, which
/// is reported with the same code.
const MAX_TRANSPORT_MESSAGE: usize = 1024 * 1024;

/// Initial read buffer of each socket, in bytes.
const READ_BUFFER_BYTES: usize = 1024;

/// Bytes buffered before a write reaches the socket; a flush writes earlier. Batched event
/// frames are flushed together, so a larger buffer would only hold memory.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// The query parameters of both endpoints.
#[derive(Debug, Default)]
struct StreamQuery {
    token: Option<String>,
    since: Option<String>,
}

/// Streams the events of one group.
pub async fn group_stream(
    State(state): State<AppState>,
    Path(group): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (query, verified) = admit(&state, &headers, query.as_deref())?;

    let unknown = || ApiError::NotFound(format!("group {group:?} does not exist"));
    let name = GroupName::parse(&group).map_err(|_| unknown())?;
    // Groups are never deleted, so a group found once exists for good, and the common case of
    // another socket joining a busy group skips the database.
    if !state.hub.is_known_group(&name) {
        if state.service.store().find_group(&name).await?.is_none() {
            return Err(unknown());
        }
        state.hub.remember_group(&name);
    }
    if !verified.caller.admin && !verified.caller.is_member(&name) {
        return Err(ApiError::Forbidden(format!(
            "you are not a member of group {name}; connect to one of your groups or to /ws/notifications/"
        )));
    }

    let mut notices = Vec::new();
    let since = match query.since.as_deref() {
        None | Some("") => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(seq) => Some(seq),
            Err(_) => {
                notices.push(since_error(format!(
                    "since={raw:?} is not a number; use the seq of the last event you received, such as since=42"
                )));
                None
            }
        },
    };

    open(state, verified, vec![(name, since)], notices, upgrade).await
}

/// Streams the events of every group the caller belongs to.
pub async fn all_streams(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (query, verified) = admit(&state, &headers, query.as_deref())?;

    let mut notices = Vec::new();
    let mut groups: Vec<(GroupName, Option<u64>)> = verified
        .caller
        .groups
        .iter()
        .map(|group| (group.clone(), None))
        .collect();
    for item in query
        .since
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let parsed = item
            .split_once(':')
            .and_then(|(group, seq)| Some((group, seq.parse::<u64>().ok()?)));
        let Some((group, seq)) = parsed else {
            notices.push(since_error(format!(
                "since item {item:?} is not GROUP:SEQ; use a comma-separated list such as since=finance:42,operations:7"
            )));
            continue;
        };
        match groups.iter_mut().find(|(name, _)| name.as_str() == group) {
            Some((_, since)) => *since = Some(seq),
            None => notices.push(since_error(format!(
                "since names group {group:?}, which is not one of your groups; it was ignored"
            ))),
        }
    }

    open(state, verified, groups, notices, upgrade).await
}

/// Joins the groups and upgrades the connection.
async fn open(
    state: AppState,
    verified: Verified,
    groups: Vec<(GroupName, Option<u64>)>,
    notices: Vec<Utf8Bytes>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::UpgradeRequired(format!(
            "{rejection}; connect with a WebSocket client to ws://HOST/ws/notifications/"
        ))
    })?;

    let hub = state.hub.clone();
    let options = hub.options();
    let (replies, receiver) = outbox(options.queue_frames, options.queue_bytes);
    let names: Vec<GroupName> = groups.iter().map(|(name, _)| name.clone()).collect();
    let (registration, heads) = hub
        .register(&verified.caller, &names, &replies)
        .await
        .map_err(|error| {
            ApiError::Unavailable(StoreError::Unavailable {
                context: "start a group stream",
                source: Box::new(error),
            })
        })?;

    let starts = groups
        .into_iter()
        .zip(heads)
        .map(|((group, since), head)| GroupStart { group, head, since })
        .collect();
    let setup = SessionSetup {
        caller: verified.caller,
        expires_at: verified.expires_at,
        registration,
        outbox: receiver,
        replies,
        groups: starts,
        notices,
    };

    let response = upgrade
        // Clients send small commands; the transport's default 128 KiB read buffer per socket
        // would dominate the memory of idle sockets. It grows when a larger message arrives.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_TRANSPORT_MESSAGE)
        .max_frame_size(MAX_TRANSPORT_MESSAGE)
        .on_upgrade(move |socket| session::run(socket, hub, setup));
    Ok(response)
}

/// Runs the checks that both endpoints share: origin, query string and token.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(StreamQuery, Verified), ApiError> {
    check_origin(state, headers)?;
    let query = parse_query(query)?;
    let verified = authenticate(state, headers, &query)?;
    Ok((query, verified))
}

/// Accepts sockets from non-browser clients (no Origin), from the gateway's own origin, and from
/// the configured origins; anything else is cross-site WebSocket hijacking.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let allowed = &state.hub.options().allowed_origins;
    if allowed.iter().any(|allowed| allowed == origin) {
        return Ok(());
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host);
    if host.is_some() && origin_host == host {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "origin {} may not open sockets; add it to HERALD_CORS_ORIGINS",
        origin.to_str().unwrap_or("(not text)")
    )))
}

fn parse_query(query: Option<&str>) -> Result<StreamQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|error| {
            ApiError::invalid(
                "query",
                format!("the query string is not URL-encoded ({error}); percent-encode the token and since values"),
            )
        })?;
    let mut parsed = StreamQuery::default();
    for (key, value) in pairs {
        match key.as_str() {
            "token" => parsed.token = Some(value),
            "since" => parsed.since = Some(value),
            _ => {}
        }
    }
    Ok(parsed)
}

/// Verifies the token from the Authorization header or, for browsers, the `token` parameter.
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &StreamQuery,
) -> Result<Verified, ApiError> {
    let token = bearer_token(headers)
        .or(query.token.as_deref().filter(|t| !t.is_empty()))
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "missing access token: send Authorization: Bearer <token> or ?token=<token>".into(),
            )
        })?;
    let verified = state.tokens.verify(token)?;
    tracing::Span::current().record("user", tracing::field::display(&verified.caller.username));
    Ok(verified)
}

fn since_error(message: String) -> Utf8Bytes {
    let mut error = CommandError::new("invalid_field", message);
    error.extra.insert("field".into(), json!("since"));
    protocol::error(None, &error)
}
