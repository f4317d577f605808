-- The audit log forgets the ids of events it recorded once their records can no
-- longer be read again (PMCORE_INBOX_RETENTION_DAYS): the inbox only dedupes
-- redeliveries. The trail itself (audit.entry and its tree) stays insert-only.
grant delete on audit.inbox to pmcore_audit_log;
