-- Leases: one row per role only one instance may hold at a time (the
-- planner). `token` rises every time the role changes hands, and every write
-- made in the role checks it in the same transaction (a fencing token): a
-- holder that stalled past its lease cannot write after another took over.
CREATE TABLE leases (
    name       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    token      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- A message being sent belongs to the instance that claimed it until
-- `lease_until`; the holder keeps extending it while alive. A `sending`
-- message whose lease ran out was left by a dead instance and is reconciled.
ALTER TABLE messages ADD COLUMN claimed_by TEXT;
ALTER TABLE messages ADD COLUMN lease_until BIGINT;
-- Claims take the oldest due message with FOR UPDATE SKIP LOCKED.
CREATE INDEX messages_pending ON messages (not_before, id) WHERE state IN ('planned', 'deferred');
-- Cluster-wide provider rate limits (GCRA): `tat` is the theoretical
-- arrival time, in microseconds of the database's clock, of the next free
-- cell. One row per provider; every instance reserves from the same row.
CREATE TABLE rate_limits (
    key TEXT   PRIMARY KEY,
    tat BIGINT NOT NULL
);
