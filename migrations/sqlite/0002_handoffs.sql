-- Hand-off events to the lender's manual-collection queue: one per (loan,
-- due date, step), posted by the hand-off worker with retries.
CREATE TABLE handoffs (
    id              INTEGER PRIMARY KEY,
    loan_id         INTEGER NOT NULL REFERENCES loans(id),
    due_date        TEXT    NOT NULL,
    step            TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (loan_id, due_date, step)
);
CREATE INDEX handoffs_pending ON handoffs (state, next_attempt_at);
