-- Keeper jobs (issue 18): one row per (job, work, perform data hash), written before the perform
-- is signed, so a restart or a second replica never performs the same upkeep twice. The number
-- 0018 (the issue) keeps it apart from other branches' next migrations; sqlx applies any missing.
-- work_key: block:N, every@N, schedule@INSTANT or log:BLOCKHASH:INDEX; perform_hash: keccak256 of
-- the perform calldata, or check:REASON-HASH for a check that reverted.
-- state: sending (claimed, nothing signed yet), submitted (raw_tx stored before the broadcast),
-- confirmed, reverted (mined with status 0), skipped (never sent: reason), dropped (not mined and
-- no longer due: reorged log, nonce used elsewhere).
-- spent_wei: the worst case (gas limit x fee ceiling) while in flight, then gas used x price paid.
CREATE TABLE keeper_runs (
    id INTEGER PRIMARY KEY,
    job          TEXT   NOT NULL,
    work_key     TEXT   NOT NULL,
    perform_hash TEXT   NOT NULL,
    state        TEXT   NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash   TEXT   NOT NULL,
    target       TEXT   NOT NULL,
    calldata     TEXT   NOT NULL,
    tx_hash      TEXT,
    raw_tx       TEXT,
    reason       TEXT,
    gas_used     BIGINT,
    spent_wei    BIGINT NOT NULL,
    period       BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (job, work_key, perform_hash)
);
CREATE INDEX keeper_runs_job ON keeper_runs (job, id);
CREATE INDEX keeper_runs_state ON keeper_runs (state);
CREATE INDEX keeper_runs_period ON keeper_runs (period, job);
