-- Version 0 is the built-in policies alone, active until an operator activates a version of
-- their own. Stored like any version so it can be shown, diffed, activated and rolled back to.

INSERT INTO policy_versions (version, policies, schema_text, description, created_at, created_by)
VALUES (0, '', NULL, 'the built-in policies alone', 0, 'system');
