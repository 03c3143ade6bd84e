-- The identities (agents or workloads) that serve a resource: their clients may introspect
-- the resource's tokens (RFC 7662 §4). A JSON array of identity ids.
ALTER TABLE resources ADD COLUMN servers_json TEXT NOT NULL DEFAULT '[]';
