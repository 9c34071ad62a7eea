-- Leases: one row per role only one instance may hold at a time (the
-- planner). `token` rises every time the role changes hands, and every write
-- made in the role checks it in the same transaction (a fencing token): a
-- holder that stalled past its lease cannot write after another took over.
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    token      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
-- A message being sent belongs to the instance that claimed it until
-- `lease_until`; the holder keeps extending it while alive. A `sending`
-- message whose lease ran out was left by a dead instance and is reconciled.
ALTER TABLE messages ADD COLUMN claimed_by TEXT;
ALTER TABLE messages ADD COLUMN lease_until INTEGER;
