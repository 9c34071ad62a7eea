-- A send that did not happen (a retry, a failure, a bounce, a message given
-- back) takes its contact back out of the log by message: without an index
-- that was a scan of every contact ever logged, for each such message. The
-- index by contact point and time served no query (caps read the log by
-- borrower), so it goes: each logged contact still updates three indexes.
CREATE INDEX contact_log_message ON contact_log (message_id);
DROP INDEX IF EXISTS contact_log_contact_at;
