-- Perfect subtrees below level 6 (64 leaves) are no longer stored: they are hashed again from the
-- records' leaf hashes when a root or proof needs them (`merkle::LOWEST_STORED_LEVEL`). Those
-- whose leaves are all still here go; those reaching below the first kept leaf stay, because a
-- prune removed the leaves they would be hashed from.
DELETE FROM audit_tree_nodes
WHERE level < 6
  AND (idx << level) >= (SELECT COALESCE(MIN(leaf_index), 9223372036854775807) FROM audit_events WHERE leaf_index IS NOT NULL);
