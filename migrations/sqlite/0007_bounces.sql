-- Bounces and complaints read from the bounce mailboxes of SMTP providers
-- (README: Bounces). One row per report, keyed by the SHA-256 of the raw
-- mail so a report read twice (after a crash, or by two instances) is
-- applied once. Soft bounces not lifted within a window suppress the
-- address; `lifted_at` is set when an operator lifts the suppression.
CREATE TABLE bounces (
    id          INTEGER PRIMARY KEY,
    digest      TEXT    NOT NULL UNIQUE,
    mailbox     TEXT    NOT NULL,
    message_id  INTEGER REFERENCES messages(id),
    channel     TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    class       TEXT    NOT NULL CHECK (class IN ('hard', 'soft', 'complaint')),
    status      TEXT    NOT NULL,
    format      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    lifted_at   INTEGER
);
CREATE INDEX bounces_address ON bounces (channel, address, class, at);
CREATE INDEX bounces_message ON bounces (message_id);
