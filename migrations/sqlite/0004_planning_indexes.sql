-- Planning pages through active loans by borrower: without this index each
-- page re-sorted the whole book.
CREATE INDEX loans_status_borrower ON loans (status, borrower_id);
-- The ISO region of a phone number, computed once at import so planning
-- never re-parses numbers (time zones are derived from it).
ALTER TABLE contact_points ADD COLUMN region TEXT;
