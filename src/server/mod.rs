//! The daemon's HTTP server (axum): the dashboard at `/`, the JSON API under `/api/v1/`
//! (documented in `docs/openapi.yaml`), `/metrics` for Prometheus, `/healthz` and `/readyz`.
//!
//! Reads are open; mutating endpoints need `Authorization: Bearer <token>` when a token is
//! configured (config validation refuses a non-loopback bind without one). Every request must
//! name a host the server answers to, and a browser's mutating request must come from the
//! server's own origin ([`guard`]). Responses carry
//! job names, store URLs and error messages, never credentials: ferry reads those only from
//! the environment and its URLs cannot hold them.

mod api;
mod guard;
pub use api::JobsResponse;
pub mod metrics;

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::config::Secret;
use crate::daemon::Daemon;

/// The dashboard: one self-contained HTML file (inline CSS, JS and SVG; no CDN).
const DASHBOARD: &str = include_str!("dashboard.html");
/// The API description, served at `/api/v1/openapi.yaml`.
const OPENAPI: &str = include_str!("../../docs/openapi.yaml");

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr}: {source} (is another ferry daemon running? change server.bind)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Clone)]
pub(crate) struct AppState {
    daemon: Daemon,
    token: Option<Secret>,
    /// Host names answered besides IP addresses and `localhost` (`server.allowed_hosts`).
    allowed_hosts: std::sync::Arc<[String]>,
}

/// The whole application, for serving or for `oneshot` tests.
pub fn router(daemon: Daemon) -> Router {
    // Runs record metrics as they finish: the recorder must exist before the first one.
    metrics::handle();
    let token = daemon.config().server.token.clone();
    let allowed_hosts = daemon.config().server.allowed_hosts.clone().into();
    let state = AppState {
        daemon,
        token,
        allowed_hosts,
    };
    let mutating = Router::new()
        .route("/api/v1/jobs/{name}/run", post(api::run_job))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/api/v1/openapi.yaml", get(openapi))
        .route("/api/v1/jobs", get(api::jobs))
        .route("/api/v1/jobs/{name}", get(api::job))
        .route("/api/v1/runs", get(api::runs))
        .route("/api/v1/series", get(api::series))
        .merge(mutating)
        .fallback(|| async {
            api::error(
                StatusCode::NOT_FOUND,
                "no such endpoint: see /api/v1/openapi.yaml",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::same_origin,
        ))
        .layer(axum::middleware::from_fn(no_store))
        .with_state(state)
}

/// Binds `addr` (port 0 picks a free one). Returns the listener and the address it got.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Serves until the daemon shuts down.
pub async fn serve(daemon: Daemon, listener: tokio::net::TcpListener) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let token = daemon.shutdown_token();
    axum::serve(listener, router(daemon))
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
        .map_err(|source| ServerError::Serve { addr, source })
}

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything is inline; nothing may load from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            ),
        ],
        DASHBOARD,
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI)
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.daemon.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Status is live: no cache may keep it.
async fn no_store(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(guard::bearer);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.expose().as_bytes()) => next.run(req).await,
        _ => {
            let mut res = api::error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs the API token: send Authorization: Bearer <token> (the value of server.token_env or token_file)",
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            res
        }
    }
}

/// Compares without an early exit, so response times do not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// JSON body helper shared by the handlers.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests;
