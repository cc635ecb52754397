//! JSON handlers under `/api/v1/`: jobs, one job, runs (with filters), the bytes-over-time
//! series, and "run now".

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{json, AppState};
use crate::daemon::{DaemonError, JobStatus, RunFilter};

/// `GET /api/v1/jobs`.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobsResponse {
    pub version: String,
    /// The daemon's clock, Unix ms: ages in the UI are relative to it.
    pub now_ms: i64,
    pub ready: bool,
    /// The daemon's resident memory (Linux), as `/metrics` exports it.
    #[serde(default)]
    pub resident_memory_bytes: Option<u64>,
    /// The bandwidth limit in force (`[runner] bwlimit`), e.g. `10MiB/s` or `50MiB/s:off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bwlimit: Option<String>,
    pub jobs: Vec<JobStatus>,
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    json(status, &ErrorBody { error: message })
}

fn daemon_error(e: &DaemonError) -> Response {
    match e {
        DaemonError::NoSuchJob { .. } => error(StatusCode::NOT_FOUND, &e.to_string()),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn bad_query(e: &QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, &e.body_text())
}

pub(super) async fn jobs(State(s): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &JobsResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            now_ms: s.daemon.clock().now_ms(),
            ready: s.daemon.is_ready(),
            resident_memory_bytes: crate::memory::resident_memory_bytes(),
            bwlimit: s.daemon.bwlimit().map(|l| l.to_string()),
            jobs: s.daemon.jobs(),
        },
    )
}

pub(super) async fn job(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.daemon.job(&name) {
        Some(j) => json(StatusCode::OK, &j),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no job named {name:?}: GET /api/v1/jobs lists them"),
        ),
    }
}

#[derive(Debug, Serialize)]
struct RunsResponse {
    runs: Vec<crate::daemon::RunRecord>,
}

pub(super) async fn runs(
    State(s): State<AppState>,
    q: Result<Query<RunFilter>, QueryRejection>,
) -> Response {
    let Query(filter) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    match s.daemon.runs(filter).await {
        Ok(runs) => json(StatusCode::OK, &RunsResponse { runs }),
        Err(e) => daemon_error(&e),
    }
}

/// `GET /api/v1/series` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SeriesQuery {
    /// How far back, in seconds (default 3600).
    window_secs: Option<u64>,
    /// How many buckets (default 60).
    buckets: Option<usize>,
}

pub(super) async fn series(
    State(s): State<AppState>,
    q: Result<Query<SeriesQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    let window = Duration::from_secs(q.window_secs.unwrap_or(3600).clamp(60, 86400 * 90));
    match s.daemon.series(window, q.buckets.unwrap_or(60)).await {
        Ok(series) => json(StatusCode::OK, &series),
        Err(e) => daemon_error(&e),
    }
}

pub(super) async fn run_job(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.daemon.trigger(&name).await {
        Ok(outcome) => json(StatusCode::ACCEPTED, &outcome),
        Err(e) => daemon_error(&e),
    }
}
