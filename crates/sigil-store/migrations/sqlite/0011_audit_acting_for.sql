-- The agents a record's actor acts for (its actors after the first, in the record's order),
-- space-delimited with a space at each end (' idn_a idn_b '), so that search and trace find a
-- sub-agent's action under every agent of its delegation chain, not only the acting one.
-- NULL when the record names one actor or none. Records written before this column are filled
-- from their bodies; a body that is not valid JSON (only an edit behind the server's back makes
-- one) is left for verification to name.

ALTER TABLE audit_events ADD COLUMN acting_for TEXT;

UPDATE audit_events
SET acting_for = (
    SELECT ' ' || group_concat(value, ' ') || ' '
    FROM (SELECT value FROM json_each(audit_events.body, '$.actors') WHERE key > 0 ORDER BY key)
)
WHERE CASE WHEN json_valid(body) THEN json_array_length(body, '$.actors') > 1 ELSE 0 END;

CREATE INDEX audit_events_acting_for ON audit_events(acting_for) WHERE acting_for IS NOT NULL;
