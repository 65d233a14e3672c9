//! What the queue stores and shows: request records, their states, decisions, and a request to queue.
use std::str::FromStr;

use alloy::primitives::{Address, B256, Bytes, U256};
use rusqlite::Row;
use serde::{Deserialize, Serialize};

use super::super::error::{Result, RootError};
use super::super::guard::Assessment;
use super::super::request::EscalationRequest;
use super::windows::WindowRead;

/// The state of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for an approver.
    Pending,
    /// Approved; waiting for the HSM to sign.
    Approved,
    /// Signed; the signature can be fetched.
    Signed,
    /// Rejected by an approver.
    Rejected,
    /// Not approved or signed in time.
    Expired,
}

impl RequestState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Signed => "signed",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    /// Whether no further change can happen.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Signed | Self::Rejected | Self::Expired)
    }
}

/// A state name that is none of [`RequestState`]'s.
#[derive(Debug, thiserror::Error)]
#[error("unknown request state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for RequestState {
    type Err = UnknownState;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownState> {
        Ok(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "signed" => Self::Signed,
            "rejected" => Self::Rejected,
            "expired" => Self::Expired,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored request as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Request id.
    pub id: String,
    /// What was asked.
    pub request: EscalationRequest,
    /// The digest the root rebuilt (and signs once approved).
    pub digest: B256,
    /// Who asked (client name).
    pub requester: String,
    /// Totals per asset the guard counted.
    pub totals: Vec<(Address, U256)>,
    /// Unix seconds when queued.
    pub created_at: u64,
    /// Unix seconds after which an unapproved request expires.
    pub expires_at: u64,
    /// Current state.
    pub state: RequestState,
    /// The 65-byte root signature (r ‖ s ‖ v, v ∈ {27, 28}) once signed.
    pub signature: Option<Bytes>,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When (unix seconds).
    pub decided_at: Option<u64>,
    /// Rejection reason.
    pub reason: Option<String>,
}

/// One recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Request id.
    pub request_id: String,
    /// `queued`, `approve`, `auto_approve`, `reject`, `expire` or `sign`.
    pub action: String,
    /// Who (client name, operator, `auto-approve rule`, `root service`).
    pub by: String,
    /// When (unix seconds).
    pub at: u64,
    /// Reason, for rejections.
    pub reason: Option<String>,
}

/// One approver's approval of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The approver's name.
    pub approver: String,
    /// When (unix seconds).
    pub at: u64,
    /// The service's tag over (request id, digest, approver).
    pub tag: String,
}

/// A request to queue.
#[derive(Debug, Clone, Copy)]
pub struct NewRequest<'a> {
    /// Request id.
    pub id: &'a str,
    /// The payload.
    pub request: &'a EscalationRequest,
    /// Client name.
    pub requester: &'a str,
    /// The guard's assessment.
    pub assessment: &'a Assessment,
    /// Unix seconds now.
    pub now: u64,
    /// When it expires unapproved.
    pub expires_at: u64,
    /// Who approves it at once (the auto-approve rule), if anyone.
    pub auto_approver: Option<&'a str>,
    /// The root signature, when an auto-approved request was signed before it is stored: it is
    /// then recorded as signed, with its decisions, in the same transaction (and only returned to
    /// the requester after that commit).
    pub signature: Option<&'a [u8]>,
    /// The window totals read for the guard ([`super::Store::window_total`]), advanced in the same
    /// transaction.
    pub windows: &'a [WindowRead],
}

/// The columns [`from_row`] reads, in a `SELECT` of `requests`.
pub(super) const COLUMNS: &str = "id, body, digest, requester, totals, created_at, expires_at, state, signature, decided_by, decided_at, reason";

/// Unix seconds as SQLite stores them (saturating).
pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
}

/// A `requests` row selected with [`COLUMNS`].
pub(super) fn from_row(row: &Row<'_>) -> Result<RequestRecord> {
    let id: String = row.get("id").map_err(RootError::store("read a request row"))?;
    let column =
        |c: &'static str| -> Result<String> { row.get::<_, String>(c).map_err(RootError::corrupt(&id, c)) };
    let optional = |c: &'static str| -> Result<Option<String>> {
        row.get::<_, Option<String>>(c).map_err(RootError::corrupt(&id, c))
    };
    let seconds = |c: &'static str| -> Result<u64> {
        row.get::<_, i64>(c).map(to_u64).map_err(RootError::corrupt(&id, c))
    };
    Ok(RequestRecord {
        request: serde_json::from_str(&column("body")?).map_err(RootError::corrupt(&id, "body"))?,
        digest: column("digest")?.parse().map_err(RootError::corrupt(&id, "digest"))?,
        requester: column("requester")?,
        totals: serde_json::from_str(&column("totals")?).map_err(RootError::corrupt(&id, "totals"))?,
        created_at: seconds("created_at")?,
        expires_at: seconds("expires_at")?,
        state: column("state")?.parse().map_err(RootError::corrupt(&id, "state"))?,
        signature: optional("signature")?
            .map(|s| s.parse())
            .transpose()
            .map_err(RootError::corrupt(&id, "signature"))?,
        decided_by: optional("decided_by")?,
        decided_at: row
            .get::<_, Option<i64>>("decided_at")
            .map_err(RootError::corrupt(&id, "decided_at"))?
            .map(to_u64),
        reason: optional("reason")?,
        id,
    })
}

/// A `decisions` row.
pub(super) fn decision_from_row(row: &Row<'_>) -> rusqlite::Result<Decision> {
    Ok(Decision {
        request_id: row.get("request_id")?,
        action: row.get("action")?,
        by: row.get("by")?,
        at: to_u64(row.get("at")?),
        reason: row.get("reason")?,
    })
}
