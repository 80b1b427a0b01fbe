//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::AppState;

/// `GET /healthz`: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is running")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 while the database answers, 503 otherwise. The broker's state is reported
/// but does not make the instance unready: without it, events still reach sockets through
/// storage on the reconcile timer, and taking every instance out of a load balancer because
/// Redis restarted would turn a delay into an outage.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready"), (status = 503, description = "The database is unreachable"))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let broker = state.service.broker();
    let broker = json!({
        "kind": broker.kind(),
        "state": if broker.is_connected() { "connected" } else { "disconnected" },
    });
    match state.service.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "database": "ok", "broker": broker})),
        ),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "database": "unreachable", "broker": broker})),
            )
        }
    }
}
