-- The audit log's indexes other than the pending one hold integrated records only. A record is
-- inserted by the group commit that every request waits for, and each index it entered cost that
-- commit a page of the log it wrote and fsynced (the leaf index took a NULL entry, to be replaced
-- at integration); integration (which sets `leaf_index`, in steps of up to 256 records and off
-- the requests' path) now enters the records into them instead, many to a page. Searches read
-- the few pending records through `audit_events_pending` (`read::search_audit`). The index of
-- `acting_for` stays as it was: it holds only the records of sub-agents, few of them.
DROP INDEX IF EXISTS audit_events_leaf;
CREATE UNIQUE INDEX audit_events_leaf ON audit_events(leaf_index) WHERE leaf_index IS NOT NULL;
DROP INDEX IF EXISTS audit_events_time;
DROP INDEX IF EXISTS audit_events_type;
DROP INDEX IF EXISTS audit_events_request;
DROP INDEX IF EXISTS audit_events_actor;
DROP INDEX IF EXISTS audit_events_target;
DROP INDEX IF EXISTS audit_events_subject;
DROP INDEX IF EXISTS audit_events_client;
DROP INDEX IF EXISTS audit_events_jti;
CREATE INDEX audit_events_time ON audit_events(time) WHERE leaf_index IS NOT NULL;
CREATE INDEX audit_events_type ON audit_events(event_type) WHERE leaf_index IS NOT NULL;
CREATE INDEX audit_events_request ON audit_events(request_id) WHERE leaf_index IS NOT NULL;
CREATE INDEX audit_events_actor ON audit_events(actor) WHERE leaf_index IS NOT NULL;
CREATE INDEX audit_events_target ON audit_events(target_id) WHERE leaf_index IS NOT NULL;
CREATE INDEX audit_events_subject ON audit_events(subject) WHERE leaf_index IS NOT NULL;
CREATE INDEX audit_events_client ON audit_events(client_id) WHERE leaf_index IS NOT NULL;
CREATE INDEX audit_events_jti ON audit_events(jti) WHERE leaf_index IS NOT NULL;
