-- The rows written for each message (the message itself, its loans, its
-- events, its logged contact) carry no foreign-key checks. On PostgreSQL a
-- check is a trigger per row that locks the parent row FOR KEY SHARE: a
-- write to the parent's tuple header and a WAL record, for a parent the
-- same transaction has often just inserted, updated or locked. Without
-- them, `duebell run --once` sending 100,000 emails took 23.0-23.6 s
-- instead of 25.4-26.2 s, its planning pass 3.3 s instead of 4.5 s. The
-- checks bought nothing: duebell deletes no borrower, loan, contact point
-- or message, and writes these rows only after reading or writing their
-- parents. SQLite keeps the declarations; its hot write connection does
-- not check them (`store/sqlite_direct.rs`).
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_borrower_id_fkey,
                     DROP CONSTRAINT IF EXISTS messages_contact_point_id_fkey;
ALTER TABLE message_loans DROP CONSTRAINT IF EXISTS message_loans_message_id_fkey,
                          DROP CONSTRAINT IF EXISTS message_loans_loan_id_fkey;
ALTER TABLE message_events DROP CONSTRAINT IF EXISTS message_events_message_id_fkey;
ALTER TABLE contact_log DROP CONSTRAINT IF EXISTS contact_log_message_id_fkey,
                        DROP CONSTRAINT IF EXISTS contact_log_borrower_id_fkey,
                        DROP CONSTRAINT IF EXISTS contact_log_contact_point_id_fkey;
