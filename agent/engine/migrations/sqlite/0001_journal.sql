-- The journal: intents and their state machine, signing requests, keeper transactions, cursors.
-- Written to run on SQLite and PostgreSQL alike: BIGINT times in unix milliseconds, JSON as TEXT,
-- ON CONFLICT for idempotent inserts.

CREATE TABLE intents (
    id              INTEGER PRIMARY KEY,
    idempotency_key TEXT    NOT NULL UNIQUE,
    policy          TEXT    NOT NULL,
    trigger_name    TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX intents_state ON intents (state);
CREATE INDEX intents_policy ON intents (policy);

-- One row per state change, written in the same transaction as the change itself.
CREATE TABLE intent_events (
    id         INTEGER PRIMARY KEY,
    intent_id  BIGINT  NOT NULL REFERENCES intents (id),
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    detail     TEXT    NOT NULL,
    at         BIGINT  NOT NULL
);
CREATE INDEX intent_events_intent ON intent_events (intent_id, id);

-- A planned module operation (one `exec`), stored before it is sent for signing so that an intent
-- is never planned twice into different operations.
CREATE TABLE operations (
    operation_id TEXT   PRIMARY KEY,
    module_nonce BIGINT NOT NULL,
    operation    TEXT   NOT NULL,
    created_at   BIGINT NOT NULL
);

-- Which intents an operation carries; several when batched.
CREATE TABLE operation_intents (
    operation_id TEXT   NOT NULL REFERENCES operations (operation_id),
    intent_id    BIGINT NOT NULL REFERENCES intents (id),
    PRIMARY KEY (operation_id, intent_id)
);
CREATE INDEX operation_intents_intent ON operation_intents (intent_id);

CREATE TABLE signing_requests (
    id           INTEGER PRIMARY KEY,
    operation_id TEXT    NOT NULL,
    signer       TEXT    NOT NULL,
    digest       TEXT    NOT NULL,
    request      TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    response     TEXT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    UNIQUE (operation_id, signer)
);

-- One row per keeper transaction signed (a replacement is a new row), stored before broadcast.
CREATE TABLE transactions (
    id               INTEGER PRIMARY KEY,
    operation_id     TEXT    NOT NULL,
    module_nonce     BIGINT  NOT NULL,
    signed_operation TEXT    NOT NULL,
    keeper_nonce     BIGINT  NOT NULL,
    tx_hash          TEXT    NOT NULL UNIQUE,
    raw_tx           TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    block_number     BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX transactions_operation ON transactions (operation_id, id);

-- The last block processed per source (block watcher, log watcher…) and Safe.
CREATE TABLE cursors (
    source       TEXT   NOT NULL,
    safe         TEXT   NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash   TEXT   NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (source, safe)
);
