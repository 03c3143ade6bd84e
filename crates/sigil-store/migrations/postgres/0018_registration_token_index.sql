-- RFC 7592 §2: a registration access token presented for a client that does not exist should be
-- revoked at once, so the client it belongs to is looked up by the token's keyed hash.
CREATE INDEX oauth_clients_registration_token ON oauth_clients(registration_token_hash)
    WHERE registration_token_hash IS NOT NULL;
