-- Manual triggers (CLI `treasury trigger`, HTTP API) waiting for the agent, and alerts from policies.

-- A request to run a manual policy; the running agent picks it up and marks it handled.
CREATE TABLE manual_triggers (
    id           INTEGER PRIMARY KEY,
    policy       TEXT    NOT NULL,
    requested_by TEXT    NOT NULL,
    requested_at BIGINT  NOT NULL,
    handled_at   BIGINT,
    outcome      TEXT
);
CREATE INDEX manual_triggers_open ON manual_triggers (handled_at, id);

-- An alert a policy raised (or the agent itself: policy errors, low keeper balance), deduplicated by key.
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    idempotency_key TEXT    NOT NULL UNIQUE,
    policy          TEXT    NOT NULL,
    trigger_name    TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL
);
