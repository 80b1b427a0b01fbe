//! The web client: static files compiled into the binary, served at `/` and `/static/…`.
//!
//! The files live in `crates/herald-gateway/web/`. Setting HERALD_WEB_DIR serves them from a
//! directory instead, so that the client can be edited without rebuilding the gateway.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::ApiError;

/// One file of the web client.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        name: "i18n.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/i18n.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/favicon.svg"),
    },
];

/// Scripts and styles only from this origin, no inline code, and sockets and API calls only to
/// this origin: notification content can never run as code in the page.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// The source of the web client's files.
#[derive(Debug, Clone, Default)]
pub enum WebSource {
    /// The copy compiled into the binary.
    #[default]
    Embedded,
    /// A directory on disk, read on every request.
    Directory(PathBuf),
}

/// `GET /`: the page.
pub async fn index(State(state): State<AppState>) -> Result<Response, ApiError> {
    serve(&state.web, "index.html").await
}

/// `GET /static/{file}`: scripts, styles and images.
pub async fn file(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if name == "index.html" {
        return Err(not_found(&name));
    }
    serve(&state.web, &name).await
}

async fn serve(source: &WebSource, name: &str) -> Result<Response, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|asset| asset.name == name)
        .ok_or_else(|| not_found(name))?;

    let body = match source {
        WebSource::Embedded => asset.body.to_vec(),
        WebSource::Directory(directory) => tokio::fs::read(directory.join(asset.name))
            .await
            .map_err(|error| {
                tracing::warn!(file = asset.name, directory = %directory.display(), %error, "failed to read a web client file");
                not_found(name)
            })?,
    };

    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Files change with the binary; `no-cache` revalidates so that an upgrade shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no web client file {name:?}"))
}
