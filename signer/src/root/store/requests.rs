//! Queueing requests and moving them through their states, each change in one transaction with
//! its decision rows.
use alloy::primitives::{Address, Bytes, U256};
use rusqlite::{Connection, TransactionBehavior, params};

use super::super::error::{Result, RootError};
use super::records::{
    Approval, COLUMNS, Decision, NewRequest, RequestRecord, RequestState, decision_from_row, from_row, to_i64,
};
use super::windows::{add_flow, advance, amount_text, stop_counting};
use super::{Store, one};

/// Who records signatures in the decision log.
const SIGNER: &str = "root service";

/// Records a decision on `id` at `at`.
fn record(tx: &Connection, id: &str, action: &str, by: &str, at: u64, reason: Option<&str>) -> Result<()> {
    tx.prepare_cached("INSERT INTO decisions (request_id, action, by, at, reason) VALUES (?, ?, ?, ?, ?)")
        .and_then(|mut s| s.execute(params![id, action, by, to_i64(at), reason]))
        .map_err(RootError::store("record a decision"))?;
    Ok(())
}

/// Starts a write transaction, taking the file's write lock at once (`BEGIN IMMEDIATE`): a second
/// process writing the queue waits here, never half-way through.
fn begin<'c>(conn: &'c mut Connection, op: &'static str) -> Result<rusqlite::Transaction<'c>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(RootError::store(op))
}

/// The state of request `id`, after a conditional update changed nothing.
fn not_pending(conn: &Connection, id: &str) -> Result<RootError> {
    let state = one(conn, id)?.state;
    Ok(RootError::NotPending { id: id.to_owned(), state: state.to_string() })
}

impl Store {
    /// Queues a request the guard accepted; `auto_approver` approves it at once, and a `signature`
    /// stores it signed. One transaction; the record is returned without reading it back.
    pub fn insert(&self, new: NewRequest<'_>) -> Result<RequestRecord> {
        let NewRequest {
            id,
            request,
            requester,
            assessment,
            now,
            expires_at,
            auto_approver,
            signature,
            windows,
        } = new;
        if signature.is_some() && auto_approver.is_none() {
            return Err(RootError::InvalidInput(format!("request {id}: signed without an approval")));
        }
        let totals: Vec<(Address, U256)> = assessment.totals.iter().map(|(a, v)| (*a, *v)).collect();
        let deadline = u64::try_from(request.deadline()).unwrap_or(u64::MAX);
        let state = match (auto_approver, signature) {
            (_, Some(_)) => RequestState::Signed,
            (Some(_), None) => RequestState::Approved,
            (None, None) => RequestState::Pending,
        };
        let signature = signature.map(Bytes::copy_from_slice);
        let digest = request.digest();
        let body = serde_json::to_string(request).map_err(|e| RootError::InvalidInput(e.to_string()))?;
        let totals_json =
            serde_json::to_string(&totals).map_err(|e| RootError::InvalidInput(e.to_string()))?;
        let mut conn = self.conn();
        let tx = begin(&mut conn, "begin queueing a request")?;
        tx.prepare_cached(
            "INSERT INTO requests (id, kind, body, digest, requester, totals, created_at, expires_at, deadline, state,
             signature, decided_by, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                request.kind(),
                body,
                digest.to_string(),
                requester,
                totals_json,
                to_i64(now),
                to_i64(expires_at),
                to_i64(deadline),
                state.as_str(),
                signature.as_ref().map(|s| s.to_string()),
                auto_approver,
                auto_approver.map(|_| to_i64(now)),
            ])
        })
        .map_err(RootError::store("insert a request"))?;
        for w in windows {
            advance(&tx, w)?;
        }
        for (token, amount) in &totals {
            let token = token.to_string();
            add_flow(&tx, &token, *amount, now)?;
            tx.prepare_cached(
                "INSERT INTO flows (request_id, token, amount, at, live) VALUES (?, ?, ?, ?, 1)",
            )
            .and_then(|mut s| s.execute(params![id, token, amount_text(*amount), to_i64(now)]))
            .map_err(RootError::store("insert a flow"))?;
        }
        record(&tx, id, "queued", requester, now, None)?;
        if let Some(by) = auto_approver {
            record(&tx, id, "auto_approve", by, now, None)?;
        }
        if signature.is_some() {
            record(&tx, id, "sign", SIGNER, now, None)?;
        }
        tx.commit().map_err(RootError::store("commit a queued request"))?;
        Ok(RequestRecord {
            id: id.to_owned(),
            request: request.clone(),
            digest,
            requester: requester.to_owned(),
            totals,
            created_at: now,
            expires_at,
            state,
            signature,
            decided_by: auto_approver.map(str::to_owned),
            decided_at: auto_approver.map(|_| now),
            reason: None,
        })
    }

    /// Moves a pending request to `to` (approved or rejected), recording who and when. An expired
    /// request is marked expired and refused with [`RootError::Expired`].
    /// An approval's authentication `tag` is stored in the same transaction.
    fn decide(
        &self,
        id: &str,
        to: RequestState,
        by: &str,
        reason: Option<&str>,
        tag: Option<&str>,
        now: u64,
    ) -> Result<RequestRecord> {
        let mut conn = self.conn();
        let current = one(&conn, id)?;
        if current.state == RequestState::Pending && current.expires_at <= now {
            drop(conn);
            self.expire_due(now)?;
            return Err(RootError::Expired(id.to_owned()));
        }
        if current.state == RequestState::Expired {
            return Err(RootError::Expired(id.to_owned()));
        }
        let tx = begin(&mut conn, "begin a decision")?;
        let done = tx
            .prepare_cached(
                "UPDATE requests SET state = ?, decided_by = ?, decided_at = ?, reason = ?
                 WHERE id = ? AND state = 'pending' AND expires_at > ?",
            )
            .and_then(|mut s| s.execute(params![to.as_str(), by, to_i64(now), reason, id, to_i64(now)]))
            .map_err(RootError::store("record a decision on a request"))?;
        if done == 0 {
            return Err(not_pending(&tx, id)?);
        }
        let action = if to == RequestState::Approved { "approve" } else { "reject" };
        if to != RequestState::Approved {
            stop_counting(&tx, id)?;
        }
        if let Some(tag) = tag {
            tx.prepare_cached("INSERT OR REPLACE INTO approval_tags (request_id, tag) VALUES (?, ?)")
                .and_then(|mut s| s.execute(params![id, tag]))
                .map_err(RootError::store("store an approval tag"))?;
        }
        record(&tx, id, action, by, now, reason)?;
        tx.commit().map_err(RootError::store("commit a decision"))?;
        one(&conn, id)
    }

    /// Marks a pending request approved without recording an approval (the service will not sign
    /// it on a human's behalf; see [`Store::approve_tagged`]).
    pub fn approve(&self, id: &str, by: &str, now: u64) -> Result<RequestRecord> {
        self.decide(id, RequestState::Approved, by, None, None, now)
    }

    /// Records `by`'s approval of a pending request with `tag`, the service's authentication of
    /// it; once `required` distinct approvers have approved, the request becomes `approved`. One
    /// transaction. A second approval by the same approver is refused.
    pub fn approve_tagged(
        &self,
        id: &str,
        by: &str,
        now: u64,
        tag: &str,
        required: u32,
    ) -> Result<RequestRecord> {
        let mut conn = self.conn();
        let current = one(&conn, id)?;
        if current.state == RequestState::Pending && current.expires_at <= now {
            drop(conn);
            self.expire_due(now)?;
            return Err(RootError::Expired(id.to_owned()));
        }
        match current.state {
            RequestState::Expired => return Err(RootError::Expired(id.to_owned())),
            RequestState::Pending => {}
            other => return Err(RootError::NotPending { id: id.to_owned(), state: other.to_string() }),
        }
        let tx = begin(&mut conn, "begin an approval")?;
        let added = tx
            .prepare_cached(
                "INSERT INTO approvals (request_id, approver, at, tag) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![id, by, to_i64(now), tag]))
            .map_err(RootError::store("record an approval"))?;
        if added == 0 {
            return Err(RootError::InvalidInput(format!(
                "{by} has already approved request {id}; it needs another approver"
            )));
        }
        record(&tx, id, "approve", by, now, None)?;
        let count: i64 = tx
            .prepare_cached("SELECT COUNT(*) FROM approvals WHERE request_id = ?")
            .and_then(|mut s| s.query_row(params![id], |r| r.get(0)))
            .map_err(RootError::store("count approvals"))?;
        if count >= i64::from(required) {
            let done = tx
                .prepare_cached(
                    "UPDATE requests SET state = 'approved', decided_by = ?, decided_at = ?
                     WHERE id = ? AND state = 'pending' AND expires_at > ?",
                )
                .and_then(|mut s| s.execute(params![by, to_i64(now), id, to_i64(now)]))
                .map_err(RootError::store("approve a request"))?;
            if done == 0 {
                return Err(not_pending(&tx, id)?);
            }
        }
        tx.commit().map_err(RootError::store("commit an approval"))?;
        one(&conn, id)
    }

    /// Every approval of request `id`, oldest first.
    pub fn approvals(&self, id: &str) -> Result<Vec<Approval>> {
        let fail = || RootError::store("read the approvals of a request");
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT approver, at, tag FROM approvals WHERE request_id = ? ORDER BY at, approver",
            )
            .map_err(fail())?;
        let rows = stmt
            .query_map(params![id], |r| {
                Ok(Approval { approver: r.get(0)?, at: r.get::<_, i64>(1)?.max(0) as u64, tag: r.get(2)? })
            })
            .map_err(fail())?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail())
    }

    /// The newest `limit` decisions on any request, newest first: the audit log.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<Decision>> {
        let fail = || RootError::store("read the decision log");
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT request_id, action, by, at, reason FROM decisions ORDER BY seq DESC LIMIT ?",
            )
            .map_err(fail())?;
        let rows = stmt
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], decision_from_row)
            .map_err(fail())?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail())
    }

    /// The authentication tag the first release stored with a request's single approval, if any
    /// (migrated into `approvals`).
    pub fn approval_tag(&self, id: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        let conn = self.conn();
        conn.prepare_cached("SELECT tag FROM approval_tags WHERE request_id = ?")
            .and_then(|mut s| s.query_row(params![id], |r| r.get(0)).optional())
            .map_err(RootError::store("read an approval tag"))
    }

    /// Ends an approved request that failed the checks made right before signing: it becomes
    /// `rejected` by the root service with `reason`, and stops counting against the caps.
    pub fn refuse_at_signing(&self, id: &str, reason: &str, now: u64) -> Result<RequestRecord> {
        let mut conn = self.conn();
        let tx = begin(&mut conn, "begin a refusal")?;
        let done = tx
            .prepare_cached(
                "UPDATE requests SET state = 'rejected', decided_by = ?, decided_at = ?, reason = ?
                 WHERE id = ? AND state = 'approved'",
            )
            .and_then(|mut s| s.execute(params![SIGNER, to_i64(now), reason, id]))
            .map_err(RootError::store("refuse an approved request"))?;
        if done > 0 {
            stop_counting(&tx, id)?;
            record(&tx, id, "refuse", SIGNER, now, Some(reason))?;
        }
        tx.commit().map_err(RootError::store("commit a refusal"))?;
        one(&conn, id)
    }

    /// Rejects a pending request with a reason.
    pub fn reject(&self, id: &str, by: &str, reason: &str, now: u64) -> Result<RequestRecord> {
        self.decide(id, RequestState::Rejected, by, Some(reason), None, now)
    }

    /// Expires pending requests past their approval window and approved ones past their deadline.
    pub fn expire_due(&self, now: u64) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = begin(&mut conn, "begin expiring requests")?;
        let ids: Vec<String> = {
            let fail = || RootError::store("find requests due to expire");
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id FROM requests WHERE (state = 'pending' AND expires_at <= ?1) OR (state = 'approved' AND deadline < ?1)",
                )
                .map_err(fail())?;
            let rows = stmt.query_map(params![to_i64(now)], |r| r.get(0)).map_err(fail())?;
            rows.collect::<rusqlite::Result<_>>().map_err(fail())?
        };
        for id in &ids {
            tx.prepare_cached("UPDATE requests SET state = 'expired' WHERE id = ?")
                .and_then(|mut s| s.execute(params![id]))
                .map_err(RootError::store("expire a request"))?;
            stop_counting(&tx, id)?;
            record(&tx, id, "expire", SIGNER, now, None)?;
        }
        tx.commit().map_err(RootError::store("commit expiries"))?;
        Ok(ids)
    }

    /// Approved requests still waiting for their signature.
    pub fn awaiting_signature(&self) -> Result<Vec<RequestRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM requests WHERE state = 'approved' AND signature IS NULL ORDER BY created_at"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(RootError::store("list approved requests"))?;
        let rows = stmt
            .query_map([], |row| Ok(from_row(row)))
            .map_err(RootError::store("list approved requests"))?;
        rows.map(|r| r.map_err(RootError::store("list approved requests"))?).collect()
    }

    /// Stores the root signature of an approved request.
    pub fn set_signed(&self, id: &str, signature: &[u8], now: u64) -> Result<RequestRecord> {
        let mut conn = self.conn();
        let tx = begin(&mut conn, "begin storing a signature")?;
        let done = tx
            .prepare_cached(
                "UPDATE requests SET state = 'signed', signature = ? WHERE id = ? AND state = 'approved'",
            )
            .and_then(|mut s| s.execute(params![Bytes::copy_from_slice(signature).to_string(), id]))
            .map_err(RootError::store("store a signature"))?;
        if done == 0 {
            return Err(not_pending(&tx, id)?);
        }
        record(&tx, id, "sign", SIGNER, now, None)?;
        tx.commit().map_err(RootError::store("commit a signature"))?;
        one(&conn, id)
    }

    /// Every decision on `id`, oldest first.
    pub fn decisions(&self, id: &str) -> Result<Vec<Decision>> {
        let fail = || RootError::store("read the decisions on a request");
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT request_id, action, by, at, reason FROM decisions WHERE request_id = ? ORDER BY seq",
            )
            .map_err(fail())?;
        let rows = stmt.query_map(params![id], decision_from_row).map_err(fail())?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail())
    }
}
