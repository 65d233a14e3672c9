-- The queue as first released. `IF NOT EXISTS`: a file written before the schema was managed by
-- sqlx already has these tables, and keeps their rows.
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, body TEXT NOT NULL, digest TEXT NOT NULL,
    requester TEXT NOT NULL, totals TEXT NOT NULL, created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, deadline INTEGER NOT NULL, state TEXT NOT NULL, signature TEXT,
    decided_by TEXT, decided_at INTEGER, reason TEXT);
CREATE INDEX IF NOT EXISTS requests_digest ON requests(digest);
CREATE INDEX IF NOT EXISTS requests_state ON requests(state);
CREATE TABLE IF NOT EXISTS flows (
    request_id TEXT NOT NULL, token TEXT NOT NULL, amount TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS flows_token ON flows(token, at);
CREATE INDEX IF NOT EXISTS flows_request ON flows(request_id);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, action TEXT NOT NULL,
    by TEXT NOT NULL, at INTEGER NOT NULL, reason TEXT);
-- The service's authentication of a human approval (see `RootService::approve`).
CREATE TABLE IF NOT EXISTS approval_tags (request_id TEXT PRIMARY KEY, tag TEXT NOT NULL);
