-- A steady tick's sweep (what can no longer go is cancelled) reads the
-- changes since the previous pass, not every pending message: loans no
-- longer active by when they changed, opted-out contact points by when they
-- opted out, holds by when they were added. The first two are partial: an
-- import of active loans and the book's reachable contact points add
-- nothing to them.
CREATE INDEX loans_inactive_changed ON loans (updated_at) WHERE status <> 'active';
CREATE INDEX contact_points_opted_out ON contact_points (opted_out_at) WHERE opted_out_at IS NOT NULL;
CREATE INDEX holds_created ON holds (created_at);
