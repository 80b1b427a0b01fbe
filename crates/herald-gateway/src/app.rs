//! The axum application: shared state, the router and the server loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath};
use axum::http::{Method, Request, header};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use herald_core::NotificationService;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::auth::TokenAuthority;
use crate::error::ApiError;
use crate::extract::MAX_BODY_BYTES;
use crate::realtime::Hub;
use crate::routes;
use crate::routes::web::WebSource;

/// State shared by every request handler.
#[derive(Clone)]
pub struct AppState {
    /// The notification rules over storage and the broker; lives as long as the server.
    pub service: NotificationService,
    /// Verifies (and, with HS256, issues) access tokens; fixed at start-up.
    pub tokens: Arc<TokenAuthority>,
    /// Live delivery to this instance's sockets.
    pub hub: Arc<Hub>,
    /// The source of the web client's files.
    pub web: WebSource,
}

impl FromRef<AppState> for Arc<TokenAuthority> {
    fn from_ref(state: &AppState) -> Self {
        state.tokens.clone()
    }
}

/// Options of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Browser origins allowed to call the API; empty disables CORS.
    pub cors_origins: Vec<axum::http::HeaderValue>,
    /// Serve `/metrics` on this router; false when it has a listener of its own.
    pub serve_metrics: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            serve_metrics: true,
        }
    }
}

/// Builds the router with every route and middleware.
pub fn router(state: AppState, options: &HttpOptions) -> Router {
    let api = Router::new()
        .route("/api/auth/token", post(routes::auth::issue_token))
        .route("/api/auth/refresh", post(routes::auth::refresh_token))
        .route("/api/groups/", get(routes::groups::list_groups))
        .route(
            "/api/notifications/",
            get(routes::notifications::list).post(routes::notifications::create),
        )
        .route(
            "/api/notifications/unread-count/",
            get(routes::notifications::unread_count),
        )
        .route(
            "/api/notifications/confirm/",
            post(routes::notifications::confirm_batch),
        )
        .route(
            "/api/notifications/read/",
            post(routes::notifications::mark_many_read),
        )
        .route(
            "/api/notifications/{id}/",
            get(routes::notifications::get_one),
        )
        .route(
            "/api/notifications/{id}/confirm/",
            post(routes::notifications::confirm),
        )
        .route(
            "/api/notifications/{id}/read/",
            post(routes::notifications::mark_read),
        )
        .route(
            "/api/notifications/{id}/history/",
            get(routes::notifications::history),
        )
        .route("/api/openapi.json", get(routes::openapi::document))
        .route("/ws/notifications/", get(routes::ws::all_streams))
        .route("/ws/notifications/{group}/", get(routes::ws::group_stream))
        .route("/", get(routes::web::index))
        .route("/static/{file}", get(routes::web::file))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz));

    let api = if options.serve_metrics {
        api.route("/metrics", get(crate::metrics::render))
    } else {
        api
    };

    let mut app = api
        .route_layer(axum::middleware::from_fn(crate::metrics::track_http))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                // The path only: a query string may carry a token and is never logged.
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str)
                    .unwrap_or("unmatched");
                tracing::info_span!(
                    "http_request",
                    method = %request.method(),
                    route,
                    path = request.uri().path(),
                    user = tracing::field::Empty,
                )
            }),
        )
        .with_state(state);

    if !options.cors_origins.is_empty() {
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(options.cors_origins.clone()))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                "idempotency-key".parse().expect("valid"),
            ])
            .expose_headers([header::LOCATION, header::LINK])
            .max_age(Duration::from_secs(600));
        app = app.layer(cors);
    }
    app
}

/// How long shutdown waits for sockets to finish their close handshake.
const SOCKET_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves. Then it stops accepting, closes every
/// socket with 1001, finishes requests in flight and waits for the sockets to close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    hub: Arc<Hub>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = hub.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!(
            open_sockets = closing.open_sockets(),
            "closing sockets and finishing requests in flight"
        );
        closing.begin_shutdown();
    };
    // Frames are already batched per flush; Nagle's algorithm would only hold a small frame
    // back until the previous one is acknowledged.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "failed to set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;

    let remaining = hub.wait_closed(SOCKET_CLOSE_GRACE).await;
    if remaining > 0 {
        tracing::warn!(
            remaining,
            "sockets did not finish closing within {SOCKET_CLOSE_GRACE:?}; dropping them"
        );
    }
    Ok(())
}
