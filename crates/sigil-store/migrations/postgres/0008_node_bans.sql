-- Replicas load the banned nodes every second (node authentication checks bans against that
-- set instead of reading each node per call); the partial index keeps that load proportional to
-- the bans, not to the fleet.
CREATE INDEX attested_nodes_banned ON attested_nodes (spiffe_id) WHERE banned_at IS NOT NULL;
