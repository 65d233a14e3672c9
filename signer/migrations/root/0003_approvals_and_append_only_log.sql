-- Each approver's approval of a request, with the service's tag over (id, digest, approver): a
-- request that needs k approvers (the `[approvals]` rules) is approved when k distinct approvers
-- have approved it, and the service checks k valid tags again before the HSM signs.
CREATE TABLE approvals (
    request_id TEXT NOT NULL, approver TEXT NOT NULL, at INTEGER NOT NULL, tag TEXT NOT NULL,
    PRIMARY KEY (request_id, approver));
-- Approvals made before: one approver each, tagged in `approval_tags`.
INSERT OR IGNORE INTO approvals (request_id, approver, at, tag)
    SELECT t.request_id, r.decided_by, COALESCE(r.decided_at, r.created_at), t.tag
    FROM approval_tags t JOIN requests r ON r.id = t.request_id
    WHERE r.decided_by IS NOT NULL;
-- The decision log (the audit log the approvals page shows) and the approvals are append-only.
CREATE TRIGGER decisions_append_only_update BEFORE UPDATE ON decisions
    BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
CREATE TRIGGER decisions_append_only_delete BEFORE DELETE ON decisions
    BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
CREATE TRIGGER approvals_append_only_update BEFORE UPDATE ON approvals
    BEGIN SELECT RAISE(ABORT, 'approvals are append-only'); END;
CREATE TRIGGER approvals_append_only_delete BEFORE DELETE ON approvals
    BEGIN SELECT RAISE(ABORT, 'approvals are append-only'); END;
