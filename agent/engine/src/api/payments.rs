//! `GET /v1/payments/export`: the bookkeeping export of `treasury payments export`, as CSV or JSON.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ErrorBody, HttpError, Shared};
use crate::export::{ExportError, PaymentRow};

/// Query of `GET /v1/payments/export`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// First day (YYYY-MM-DD, UTC) of the execution's block time.
    pub from: String,
    /// Last day (YYYY-MM-DD, UTC), inclusive.
    pub to: String,
    /// `csv` (default) or `json`.
    pub format: Option<String>,
}

fn bad_request(message: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, message)
}

fn day(name: &str, text: &str) -> Result<chrono::NaiveDate, HttpError> {
    text.parse().map_err(|e| bad_request(format!("{name}: {text:?} is not a YYYY-MM-DD date ({e})")))
}

impl From<ExportError> for HttpError {
    fn from(e: ExportError) -> Self {
        tracing::error!(error = %e, "HTTP API: payments export");
        let status = match e {
            ExportError::Chain { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

/// Every payment and swap executed between two dates (UTC, inclusive), oldest first: date,
/// treasury, policy, recipient name and address, token, amount, USD value at the decision's
/// block, gas fee in ETH, transaction hash.
#[utoipa::path(get, path = "/v1/payments/export", operation_id = "exportPayments", params(ExportQuery),
    responses(
        (status = 200, description = "The payments, as CSV (a header line, then one line each) or JSON",
            content((Vec<PaymentRow> = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A bad date, format or unknown parameter", body = ErrorBody),
        (status = 500, description = "Journal unreadable", body = ErrorBody),
        (status = 502, description = "The chain could not be read", body = ErrorBody),
        (status = 503, description = "This agent serves no export (no chain connection)", body = ErrorBody),
    ))]
pub async fn export_payments(
    State(s): State<Shared>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(q) = query.map_err(|e| bad_request(e.body_text()))?;
    let (from, to) = (day("from", &q.from)?, day("to", &q.to)?);
    if from > to {
        return Err(bad_request(format!("from {from} is after to {to}")));
    }
    let json = match q.format.as_deref().unwrap_or("csv") {
        "csv" => false,
        "json" => true,
        other => return Err(bad_request(format!("format {other:?}: expected csv or json"))),
    };
    let Some(source) = &s.payments else {
        return Err(HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "this agent serves no payments export"));
    };
    let rows = crate::export::payments(&s.journal, source, from, to).await?;
    Ok(if json {
        axum::Json(rows).into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], crate::export::csv(&rows)).into_response()
    })
}
