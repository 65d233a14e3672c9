//! Queueing requests and moving them through their states, each change in one transaction with
//! its decision rows.
use alloy::primitives::{Address, Bytes, U256};
use sqlx::sqlite::SqliteConnection;

use super::super::error::{Result, RootError};
use super::Store;
use super::records::{
    COLUMNS, Decision, NewRequest, RequestRecord, RequestState, decision_from_row, from_row, to_i64,
};
use super::windows::{add_flow, advance, amount_text, stop_counting};

/// Who records signatures in the decision log.
const SIGNER: &str = "root service";

/// Records several decisions on `id` at `at` (no reason) in one statement.
async fn record_all(tx: &mut SqliteConnection, id: &str, decisions: &[(&str, &str)], at: u64) -> Result<()> {
    let rows = vec!["(?, ?, ?, ?, NULL)"; decisions.len()].join(", ");
    let sql = format!("INSERT INTO decisions (request_id, action, by, at, reason) VALUES {rows}");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (action, by) in decisions {
        q = q.bind(id).bind(*action).bind(*by).bind(to_i64(at));
    }
    q.execute(&mut *tx).await.map_err(RootError::store("record decisions"))?;
    Ok(())
}

async fn record(
    tx: &mut SqliteConnection,
    id: &str,
    action: &str,
    by: &str,
    at: u64,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query("INSERT INTO decisions (request_id, action, by, at, reason) VALUES (?, ?, ?, ?, ?)")
        .bind(id)
        .bind(action)
        .bind(by)
        .bind(to_i64(at))
        .bind(reason)
        .execute(&mut *tx)
        .await
        .map_err(RootError::store("record a decision"))?;
    Ok(())
}

impl Store {
    /// Queues a request the guard accepted; `auto_approver` approves it at once, and a `signature`
    /// stores it signed. One transaction; the record is returned without reading it back.
    pub async fn insert(&self, new: NewRequest<'_>) -> Result<RequestRecord> {
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
        let mut tx = self.pool.begin().await.map_err(RootError::store("begin queueing a request"))?;
        sqlx::query(
            "INSERT INTO requests (id, kind, body, digest, requester, totals, created_at, expires_at, deadline, state,
             signature, decided_by, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(request.kind())
        .bind(body)
        .bind(digest.to_string())
        .bind(requester)
        .bind(totals_json)
        .bind(to_i64(now))
        .bind(to_i64(expires_at))
        .bind(to_i64(deadline))
        .bind(state.as_str())
        .bind(signature.as_ref().map(|s| s.to_string()))
        .bind(auto_approver)
        .bind(auto_approver.map(|_| to_i64(now)))
        .execute(&mut *tx)
        .await
        .map_err(RootError::store("insert a request"))?;
        for w in windows {
            advance(&mut tx, w).await?;
        }
        for (token, amount) in &totals {
            let token = token.to_string();
            add_flow(&mut tx, &token, *amount, now).await?;
            sqlx::query("INSERT INTO flows (request_id, token, amount, at, live) VALUES (?, ?, ?, ?, 1)")
                .bind(id)
                .bind(&token)
                .bind(amount_text(*amount))
                .bind(to_i64(now))
                .execute(&mut *tx)
                .await
                .map_err(RootError::store("insert a flow"))?;
        }
        let mut decisions = vec![("queued", requester)];
        if let Some(by) = auto_approver {
            decisions.push(("auto_approve", by));
        }
        if signature.is_some() {
            decisions.push(("sign", SIGNER));
        }
        record_all(&mut tx, id, &decisions, now).await?;
        tx.commit().await.map_err(RootError::store("commit a queued request"))?;
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
    async fn decide(
        &self,
        id: &str,
        to: RequestState,
        by: &str,
        reason: Option<&str>,
        tag: Option<&str>,
        now: u64,
    ) -> Result<RequestRecord> {
        let current = self.one(id).await?;
        if current.state == RequestState::Pending && current.expires_at <= now {
            self.expire_due(now).await?;
            return Err(RootError::Expired(id.to_owned()));
        }
        if current.state == RequestState::Expired {
            return Err(RootError::Expired(id.to_owned()));
        }
        let mut tx = self.pool.begin().await.map_err(RootError::store("begin a decision"))?;
        let done = sqlx::query(
            "UPDATE requests SET state = ?, decided_by = ?, decided_at = ?, reason = ?
             WHERE id = ? AND state = 'pending' AND expires_at > ?",
        )
        .bind(to.as_str())
        .bind(by)
        .bind(to_i64(now))
        .bind(reason)
        .bind(id)
        .bind(to_i64(now))
        .execute(&mut *tx)
        .await
        .map_err(RootError::store("record a decision on a request"))?;
        if done.rows_affected() == 0 {
            let state = self.one(id).await?.state;
            return Err(RootError::NotPending { id: id.to_owned(), state: state.to_string() });
        }
        let action = if to == RequestState::Approved { "approve" } else { "reject" };
        if to != RequestState::Approved {
            stop_counting(&mut tx, id).await?;
        }
        if let Some(tag) = tag {
            sqlx::query("INSERT OR REPLACE INTO approval_tags (request_id, tag) VALUES (?, ?)")
                .bind(id)
                .bind(tag)
                .execute(&mut *tx)
                .await
                .map_err(RootError::store("store an approval tag"))?;
        }
        record(&mut tx, id, action, by, now, reason).await?;
        tx.commit().await.map_err(RootError::store("commit a decision"))?;
        self.one(id).await
    }

    /// Approves a pending request (no authentication tag: the service will not sign it on a
    /// human's behalf; see [`Store::approve_tagged`]).
    pub async fn approve(&self, id: &str, by: &str, now: u64) -> Result<RequestRecord> {
        self.decide(id, RequestState::Approved, by, None, None, now).await
    }

    /// Approves a pending request and stores `tag`, the service's authentication of the approval,
    /// in the same transaction.
    pub async fn approve_tagged(&self, id: &str, by: &str, now: u64, tag: &str) -> Result<RequestRecord> {
        self.decide(id, RequestState::Approved, by, None, Some(tag), now).await
    }

    /// The authentication tag stored with a request's approval, if any.
    pub async fn approval_tag(&self, id: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT tag FROM approval_tags WHERE request_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(RootError::store("read an approval tag"))
    }

    /// Ends an approved request that failed the checks made right before signing: it becomes
    /// `rejected` by the root service with `reason`, and stops counting against the caps.
    pub async fn refuse_at_signing(&self, id: &str, reason: &str, now: u64) -> Result<RequestRecord> {
        let mut tx = self.pool.begin().await.map_err(RootError::store("begin a refusal"))?;
        let done = sqlx::query(
            "UPDATE requests SET state = 'rejected', decided_by = ?, decided_at = ?, reason = ?
             WHERE id = ? AND state = 'approved'",
        )
        .bind(SIGNER)
        .bind(to_i64(now))
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(RootError::store("refuse an approved request"))?;
        if done.rows_affected() > 0 {
            stop_counting(&mut tx, id).await?;
            record(&mut tx, id, "refuse", SIGNER, now, Some(reason)).await?;
        }
        tx.commit().await.map_err(RootError::store("commit a refusal"))?;
        self.one(id).await
    }

    /// Rejects a pending request with a reason.
    pub async fn reject(&self, id: &str, by: &str, reason: &str, now: u64) -> Result<RequestRecord> {
        self.decide(id, RequestState::Rejected, by, Some(reason), None, now).await
    }

    /// Expires pending requests past their approval window and approved ones past their deadline.
    pub async fn expire_due(&self, now: u64) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await.map_err(RootError::store("begin expiring requests"))?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM requests WHERE (state = 'pending' AND expires_at <= ?1) OR (state = 'approved' AND deadline < ?1)",
        )
        .bind(to_i64(now))
        .fetch_all(&mut *tx)
        .await
        .map_err(RootError::store("find requests due to expire"))?;
        for id in &ids {
            sqlx::query("UPDATE requests SET state = 'expired' WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(RootError::store("expire a request"))?;
            stop_counting(&mut tx, id).await?;
            record(&mut tx, id, "expire", SIGNER, now, None).await?;
        }
        tx.commit().await.map_err(RootError::store("commit expiries"))?;
        Ok(ids)
    }

    /// Approved requests still waiting for their signature.
    pub async fn awaiting_signature(&self) -> Result<Vec<RequestRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM requests WHERE state = 'approved' AND signature IS NULL ORDER BY created_at"
        ));
        let rows = sqlx::query(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(RootError::store("list approved requests"))?;
        rows.iter().map(from_row).collect()
    }

    /// Stores the root signature of an approved request.
    pub async fn set_signed(&self, id: &str, signature: &[u8], now: u64) -> Result<RequestRecord> {
        let mut tx = self.pool.begin().await.map_err(RootError::store("begin storing a signature"))?;
        let done = sqlx::query(
            "UPDATE requests SET state = 'signed', signature = ? WHERE id = ? AND state = 'approved'",
        )
        .bind(Bytes::copy_from_slice(signature).to_string())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(RootError::store("store a signature"))?;
        if done.rows_affected() == 0 {
            let state = self.one(id).await?.state;
            return Err(RootError::NotPending { id: id.to_owned(), state: state.to_string() });
        }
        record(&mut tx, id, "sign", SIGNER, now, None).await?;
        tx.commit().await.map_err(RootError::store("commit a signature"))?;
        self.one(id).await
    }

    /// Every decision on `id`, oldest first.
    pub async fn decisions(&self, id: &str) -> Result<Vec<Decision>> {
        let rows = sqlx::query(
            "SELECT request_id, action, by, at, reason FROM decisions WHERE request_id = ? ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(RootError::store("read the decisions on a request"))?;
        rows.iter().map(decision_from_row).collect()
    }
}
