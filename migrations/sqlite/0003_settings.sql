-- Deployment-wide values generated once, e.g. the key that signs
-- unsubscribe links (shared by every instance on the same store).
CREATE TABLE settings (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
