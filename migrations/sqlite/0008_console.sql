-- The console (README: The console). Accounts with an argon2id hash of
-- their password; sessions keyed by the SHA-256 of their cookie (the
-- cookie itself is never stored); and the change log of every edit made
-- through the console or its /v1 routes, with the text before and after.
-- A template's versions are its rows in the change log.
CREATE TABLE console_users (
    name          TEXT    PRIMARY KEY,
    role          TEXT    NOT NULL CHECK (role IN ('viewer', 'editor', 'compliance', 'admin')),
    password_hash TEXT    NOT NULL,
    locale        TEXT,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE TABLE console_sessions (
    token_hash  TEXT    PRIMARY KEY,
    user_name   TEXT    NOT NULL REFERENCES console_users(name),
    csrf        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
);
CREATE TABLE console_changes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    subject  TEXT    NOT NULL,
    before   TEXT,
    after    TEXT,
    summary  TEXT    NOT NULL
);
CREATE INDEX console_changes_subject ON console_changes (kind, subject, id);
CREATE INDEX console_changes_at ON console_changes (at);
-- The console's "today" counts read the events of one day.
CREATE INDEX message_events_at ON message_events (at);
