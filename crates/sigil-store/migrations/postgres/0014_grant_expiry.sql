-- Authorization codes and refresh tokens are forgotten once expired (with the other expired
-- single-use marks, once a minute): this index finds them without reading every grant.
CREATE INDEX delegated_grants_expiry ON delegated_grants(expires_at);
