-- Exports run as jobs (issue 13): a range of any size is written by the service in the
-- background, part by part (S3 multipart upload), and the auditor polls for it. Unlike
-- the trail itself, a job's row changes as it runs, so the role may update it; it may
-- still never delete one.
create table audit.export (
    id            uuid primary key,
    requested_by  text not null,
    from_index    bigint not null,
    to_index      bigint not null,
    tree_size     bigint not null,
    status        text not null default 'pending',
    object_key    text not null,
    entries       bigint not null default 0,
    error         text,
    created_at    timestamptz not null default now(),
    started_at    timestamptz,
    -- Written with each part: a running job whose heartbeat stops was abandoned by an
    -- instance that died, and another takes it over.
    heartbeat_at  timestamptz,
    finished_at   timestamptz,
    constraint export_status_check check (status in ('pending', 'running', 'done', 'failed')),
    constraint export_range_check check (0 <= from_index and from_index < to_index and to_index <= tree_size)
);
create index export_pending_idx on audit.export (created_at) where status in ('pending', 'running');

grant select, insert, update on audit.export to pmcore_audit_log;

-- OIDC tokens name an organization; its kind decides which roles the token may carry.
grant select (id, kind) on pm.organization to pmcore_audit_log;
