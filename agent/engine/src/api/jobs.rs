//! Keeper jobs in the API (issue 18): `GET /v1/jobs` (runs by job and state) and
//! `GET /v1/jobs/{name}` (one job's newest runs).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ErrorBody, HttpError, Shared};
use crate::journal::keeper::{JobCounts, KeeperRun};

/// The answer of `GET /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Per job that ever ran, its runs by state and the gas they used.
    pub jobs: Vec<JobCounts>,
}

/// Keeper jobs' runs by state (jobs that never came due are not listed).
#[utoipa::path(get, path = "/v1/jobs", operation_id = "listJobs",
    responses(
        (status = 200, description = "Runs by job and state", body = JobList),
        (status = 500, description = "Journal unreadable", body = ErrorBody),
    ))]
pub async fn list_jobs(State(s): State<Shared>) -> Result<Json<JobList>, HttpError> {
    Ok(Json(JobList { jobs: s.journal.keeper_counts().await? }))
}

/// Query of `GET /v1/jobs/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// At most this many, newest first (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u32>,
}

/// The answer of `GET /v1/jobs/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobHistory {
    /// The job.
    pub job: String,
    /// Its newest runs: checked work performed, skipped (with the reason) or dropped.
    pub runs: Vec<KeeperRun>,
}

/// One keeper job's newest runs.
#[utoipa::path(get, path = "/v1/jobs/{name}", operation_id = "jobHistory",
    params(("name" = String, Path, description = "The job's name"), HistoryQuery),
    responses(
        (status = 200, description = "The job's runs, newest first", body = JobHistory),
        (status = 400, description = "Bad limit or unknown parameter", body = ErrorBody),
        (status = 500, description = "Journal unreadable", body = ErrorBody),
    ))]
pub async fn job_history(
    State(s): State<Shared>,
    Path(name): Path<String>,
    query: std::result::Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<JobHistory>, HttpError> {
    let Query(q) = query.map_err(|e| HttpError::new(axum::http::StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(HttpError::new(axum::http::StatusCode::BAD_REQUEST, "limit must be between 1 and 1000"));
    }
    let runs = s.journal.keeper_runs(Some(&name), limit).await?;
    Ok(Json(JobHistory { job: name, runs }))
}
