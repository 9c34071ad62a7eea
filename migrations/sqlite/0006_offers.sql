-- Repayment offers made by policy steps: one per (loan, due date, step),
-- created when the first message of the step is rendered, with the exact
-- terms the borrower reads. `state`: open, then taken (a payment met the
-- terms in time), expired (the deadline passed) or void (no message
-- carrying it was ever sent). A taken offer's event is posted to the lender
-- with retries (`event_*`).
CREATE TABLE offers (
    id              INTEGER PRIMARY KEY,
    loan_id         INTEGER NOT NULL REFERENCES loans(id),
    due_date        TEXT    NOT NULL,
    step            TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('fee_waiver', 'discount', 'payment_plan')),
    amount          TEXT,
    percent         TEXT,
    min_payment     TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    made_at         INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('open', 'taken', 'expired', 'void')),
    settled_at      INTEGER,
    payment_ids     TEXT,
    event_state     TEXT    NOT NULL DEFAULT 'none' CHECK (event_state IN ('none', 'pending', 'delivered', 'failed')),
    event_attempts  INTEGER NOT NULL DEFAULT 0,
    event_next_at   INTEGER,
    event_error     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (loan_id, due_date, step)
);
CREATE INDEX offers_open ON offers (state, expires_at);
CREATE INDEX offers_events ON offers (event_state, event_next_at);
