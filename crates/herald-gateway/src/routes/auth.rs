//! `POST /api/auth/token`: password login, and `POST /api/auth/refresh`: a new token for a valid
//! one.

use axum::Json;
use axum::extract::State;
use herald_core::Username;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::{Authenticated, verify_password};
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;

#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Lifetime of the token in seconds.
    pub expires_in: u64,
}

/// Exchanges a username and password for an access token.
#[utoipa::path(
    post, path = "/api/auth/token", tag = "auth",
    request_body = TokenRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "Unknown user or wrong password", body = crate::routes::openapi::Problem),
        (status = 422, description = "Missing field", body = crate::routes::openapi::Problem),
    )
)]
pub async fn issue_token(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    if !state.tokens.can_issue() {
        return Err(ApiError::Disabled(
            "password login is disabled: access tokens come from the configured identity provider"
                .into(),
        ));
    }
    let username = body
        .username
        .ok_or_else(|| ApiError::invalid("username", "is required"))?;
    let password = body
        .password
        .ok_or_else(|| ApiError::invalid("password", "is required"))?;

    // An invalid username is treated like an unknown one, so the answer does not reveal which
    // usernames could exist.
    let user = match Username::parse(&username) {
        Ok(name) => state.service.store().find_user(&name).await?,
        Err(_) => None,
    };

    // Argon2 takes tens of milliseconds of CPU: keep it off the async workers. Without a user,
    // a dummy hash is verified so that both failures take comparable time.
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let valid = tokio::task::spawn_blocking(move || verify_password(&password, stored.as_deref()))
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let Some(user) = user.filter(|_| valid) else {
        tracing::info!(username = %username.escape_debug(), "login failed");
        return Err(ApiError::Unauthorized(
            "invalid username or password".into(),
        ));
    };

    let (access_token, expires_in) = state
        .tokens
        .issue(&user, state.tokens.default_ttl)
        .map_err(|e| ApiError::Internal(e.into()))?;
    tracing::info!(user = %user.username, "token issued");
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
    }))
}

/// Exchanges a valid access token for a new one with a full lifetime and the user's current
/// groups, so that a page kept open all day stays logged in. A removed user gets 401.
#[utoipa::path(
    post, path = "/api/auth/refresh", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "Missing, invalid or expired token, or the user was removed", body = crate::routes::openapi::Problem),
        (status = 404, description = "Tokens come from an external identity provider", body = crate::routes::openapi::Problem),
    )
)]
pub async fn refresh_token(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> ApiResult<Json<TokenResponse>> {
    if !state.tokens.can_issue() {
        return Err(ApiError::Disabled(
            "token refresh is disabled: access tokens come from the configured identity provider"
                .into(),
        ));
    }
    let Some(user) = state.service.store().find_user(&caller.username).await? else {
        tracing::info!(user = %caller.username, "token refresh rejected: the user no longer exists");
        return Err(ApiError::Unauthorized(
            "the user of this token no longer exists".into(),
        ));
    };

    let (access_token, expires_in) = state
        .tokens
        .issue(&user, state.tokens.default_ttl)
        .map_err(|e| ApiError::Internal(e.into()))?;
    tracing::info!(user = %user.username, "token refreshed");
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
    }))
}
