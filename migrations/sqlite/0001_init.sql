-- duebell embedded store, schema 1.
-- Instants are INTEGER milliseconds since the Unix epoch, UTC. Calendar dates
-- are TEXT 'YYYY-MM-DD' (a loan's due date is a local date, not an instant).
-- Money is TEXT holding an exact decimal; it is never a REAL.

CREATE TABLE borrowers (
    id          INTEGER PRIMARY KEY,
    external_id TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    locale      TEXT,              -- BCP 47; NULL = the configured default
    timezone    TEXT,              -- IANA; NULL = derived (phone country) or default
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Phones and emails. One row per (borrower, channel, address) ever seen, so
-- an opt-out stays attached to the address even if the loan book drops it
-- and brings it back. `active` marks the borrower's current address.
CREATE TABLE contact_points (
    id             INTEGER PRIMARY KEY,
    borrower_id    INTEGER NOT NULL REFERENCES borrowers(id),
    channel        TEXT    NOT NULL CHECK (channel IN ('sms', 'email')),
    address        TEXT    NOT NULL,
    active         INTEGER NOT NULL DEFAULT 1,
    opted_out_at   INTEGER,
    opt_out_source TEXT,
    invalid_at     INTEGER,
    invalid_reason TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (borrower_id, channel, address)
);
CREATE INDEX contact_points_address ON contact_points (channel, address);

CREATE TABLE loans (
    id          INTEGER PRIMARY KEY,
    external_id TEXT    NOT NULL UNIQUE,
    borrower_id INTEGER NOT NULL REFERENCES borrowers(id),
    due_date    TEXT    NOT NULL,
    amount_due  TEXT    NOT NULL,
    currency    TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('active', 'paid', 'closed', 'written_off')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX loans_status_due ON loans (status, due_date);
CREATE INDEX loans_borrower ON loans (borrower_id);

CREATE TABLE payments (
    id          INTEGER PRIMARY KEY,
    external_id TEXT    NOT NULL UNIQUE,
    loan_id     INTEGER NOT NULL REFERENCES loans(id),
    amount      TEXT    NOT NULL,
    paid_at     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX payments_loan ON payments (loan_id);

-- A hold stops reminders for a borrower or one loan: until a date
-- (promise to pay) or until cleared.
CREATE TABLE holds (
    id          INTEGER PRIMARY KEY,
    borrower_id INTEGER REFERENCES borrowers(id),
    loan_id     INTEGER REFERENCES loans(id),
    kind        TEXT    NOT NULL CHECK (kind IN ('promise_to_pay', 'dispute', 'hardship', 'do_not_contact')),
    until_date  TEXT,
    note        TEXT,
    created_at  INTEGER NOT NULL,
    cleared_at  INTEGER,
    CHECK (borrower_id IS NOT NULL OR loan_id IS NOT NULL)
);
CREATE INDEX holds_borrower ON holds (borrower_id) WHERE cleared_at IS NULL;
CREATE INDEX holds_loan ON holds (loan_id) WHERE cleared_at IS NULL;

-- One outgoing message: possibly several loans of one borrower consolidated.
-- `dedupe_key` makes planning idempotent; `state` is the latest of
-- message_events.
CREATE TABLE messages (
    id               INTEGER PRIMARY KEY,
    dedupe_key       TEXT    NOT NULL UNIQUE,
    borrower_id      INTEGER NOT NULL REFERENCES borrowers(id),
    contact_point_id INTEGER REFERENCES contact_points(id),
    channel          TEXT    NOT NULL CHECK (channel IN ('sms', 'email')),
    step             TEXT    NOT NULL,
    template         TEXT    NOT NULL,
    template_version TEXT,
    state            TEXT    NOT NULL CHECK (state IN ('planned', 'deferred', 'sending', 'sent', 'delivered',
                                  'undelivered', 'failed', 'suppressed', 'cancelled', 'expired', 'unknown')),
    reason           TEXT,
    not_before       INTEGER NOT NULL,
    expires_at       INTEGER,
    attempt_id       TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    provider         TEXT,
    provider_ref     TEXT,
    subject          TEXT,
    body             TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX messages_due ON messages (state, not_before);
CREATE INDEX messages_borrower ON messages (borrower_id);

-- Which loans (and which step of each) a message carries. The unique key is
-- the "planned at most once, ever" rule: (loan, due date, step, channel).
CREATE TABLE message_loans (
    message_id INTEGER NOT NULL REFERENCES messages(id),
    loan_id    INTEGER NOT NULL REFERENCES loans(id),
    due_date   TEXT    NOT NULL,
    step       TEXT    NOT NULL,
    channel    TEXT    NOT NULL,
    PRIMARY KEY (message_id, loan_id),
    UNIQUE (loan_id, due_date, step, channel)
);

-- Every state change of every message, with its reason: the audit trail.
CREATE TABLE message_events (
    id         INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    at         INTEGER NOT NULL,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    reason     TEXT,
    detail     TEXT
);
CREATE INDEX message_events_message ON message_events (message_id);

-- Every contact actually made (handed to a provider); caps count these.
CREATE TABLE contact_log (
    id               INTEGER PRIMARY KEY,
    message_id       INTEGER NOT NULL REFERENCES messages(id),
    borrower_id      INTEGER NOT NULL REFERENCES borrowers(id),
    contact_point_id INTEGER REFERENCES contact_points(id),
    channel          TEXT    NOT NULL,
    at               INTEGER NOT NULL
);
CREATE INDEX contact_log_borrower_at ON contact_log (borrower_id, at);
CREATE INDEX contact_log_contact_at ON contact_log (contact_point_id, at);

-- Each applied import file, with what it did.
CREATE TABLE imports (
    id           INTEGER PRIMARY KEY,
    path         TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('loans', 'payments')),
    content_hash TEXT    NOT NULL,
    imported     INTEGER NOT NULL,
    updated      INTEGER NOT NULL,
    unchanged    INTEGER NOT NULL,
    rejected     INTEGER NOT NULL,
    at           INTEGER NOT NULL
);
CREATE INDEX imports_path ON imports (path, id);
