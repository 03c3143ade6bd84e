-- The agents a record's actor acts for (its actors after the first, in the record's order),
-- space-delimited with a space at each end (' idn_a idn_b '), so that search and trace find a
-- sub-agent's action under every agent of its delegation chain, not only the acting one.
-- NULL when the record names one actor or none. Records written before this column are filled
-- from their bodies; a body that is not valid JSON (only an edit behind the server's back makes
-- one) is left for verification to name.

ALTER TABLE audit_events ADD COLUMN acting_for TEXT;

CREATE FUNCTION pg_temp.sigil_acting_for(body TEXT) RETURNS TEXT AS $$
BEGIN
    RETURN (
        SELECT ' ' || string_agg(a.actor, ' ' ORDER BY a.n) || ' '
        FROM jsonb_array_elements_text(body::jsonb -> 'actors') WITH ORDINALITY AS a(actor, n)
        WHERE a.n > 1
    );
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

UPDATE audit_events SET acting_for = pg_temp.sigil_acting_for(body) WHERE body LIKE '%"actors":[%,%';

CREATE INDEX audit_events_acting_for ON audit_events(acting_for) WHERE acting_for IS NOT NULL;
