-- When the planner next needs to look at a borrower (UTC milliseconds): the
-- local midnight of the next day on which one of their loans reaches or
-- leaves a step of the ladder. A steady tick reads only borrowers whose time
-- has come. 0 = at the next tick (new borrowers, and rows an import
-- changed); NULL = nothing ahead (no active loan, or past the last step).
ALTER TABLE borrowers ADD COLUMN next_look INTEGER DEFAULT 0;
CREATE INDEX borrowers_next_look ON borrowers (next_look);
