-- Leases: per treasury, which replica may act and under which term (see journal/lease.rs).
-- A takeover increments the term; every journal write of a replica checks its term first.
CREATE TABLE leases (
    treasury   TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    term       BIGINT NOT NULL,
    -- The database's clock, unix milliseconds: the replicas' clocks are never compared.
    expires_at BIGINT NOT NULL
);
