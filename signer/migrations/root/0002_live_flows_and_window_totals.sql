-- Whether a flow still counts against the period caps (`live`: its request is pending, approved or
-- signed), and per (asset, period) the running total of the live flows after `horizon`.
-- Amounts and totals are decimal text parsed into alloy's U256 (`amount` has always been stored
-- so; SQLite integers are 64-bit).
--
-- `flows` is rebuilt from the four columns every earlier file has, so a queue of any earlier
-- version (`PRAGMA user_version` 0 to 3, with or without the 32-bit limb columns of versions 1 to
-- 3) ends in the same shape, `live` recomputed from the request states as those versions kept it.
-- `window_totals` only caches sums of `flows`: it is dropped and rebuilt by the next read.
CREATE TABLE flows_v2 (
    request_id TEXT NOT NULL, token TEXT NOT NULL, amount TEXT NOT NULL, at INTEGER NOT NULL,
    live INTEGER NOT NULL);
INSERT INTO flows_v2 (request_id, token, amount, at, live)
    SELECT request_id, token, amount, at,
        COALESCE((SELECT state IN ('pending', 'approved', 'signed') FROM requests
                  WHERE requests.id = flows.request_id), 0)
    FROM flows;
DROP TABLE flows;
ALTER TABLE flows_v2 RENAME TO flows;
CREATE INDEX flows_request ON flows(request_id);
-- Covering: a window's sum reads the index only.
CREATE INDEX flows_window ON flows(token, live, at, amount);
DROP TABLE IF EXISTS window_totals;
CREATE TABLE window_totals (
    token TEXT NOT NULL, period INTEGER NOT NULL, horizon INTEGER NOT NULL, total TEXT NOT NULL,
    PRIMARY KEY (token, period));
