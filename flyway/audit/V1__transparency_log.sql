-- The audit service's own migrations (applied by `audit-log migrate`, history in
-- `audit_schema_history`): the trail becomes a transparency log (issue 13).
-- audit.entry itself predates this set (flyway/pm/V1__init.sql) and stays as it is:
-- insert-only for the service's role.

-- The organization an entry concerns (the payload's `organization_id`), so an
-- aggregator's auditor is shown its own entries only. Set on insert, never after.
alter table audit.entry add column organization_id uuid;
create index entry_organization_idx on audit.entry (organization_id, seq);
create index entry_principal_idx on audit.entry (principal, seq);
create index entry_type_idx on audit.entry (event_type, seq);
create index entry_occurred_idx on audit.entry (occurred_at, seq);

-- Position of each entry in the log (dense from 0, in commit order) and the hash of
-- its leaf (RFC 6962: SHA-256 of 0x00 and the entry's canonical encoding).
create table audit.leaf (
    leaf_index  bigint primary key,
    entry_seq   bigint not null,
    leaf_hash   bytea not null,
    constraint leaf_entry_key unique (entry_seq),
    constraint leaf_entry_fkey foreign key (entry_seq) references audit.entry (seq),
    constraint leaf_hash_check check (length(leaf_hash) = 32),
    constraint leaf_index_check check (leaf_index >= 0)
);

-- The hash of every complete subtree, at its stored-hash index (the numbering of
-- Go's tlog and tlog_tiles): roots and proofs of any size are read from here.
create table audit.tree_hash (
    stored_index bigint primary key,
    hash         bytea not null,
    constraint tree_hash_check check (length(hash) = 32)
);

-- Every checkpoint the service signed, as served (C2SP signed note).
create table audit.checkpoint (
    tree_size    bigint primary key,
    root_hash    bytea not null,
    note         text not null,
    key_id       bigint not null,
    signed_at    timestamptz not null default now()
);

-- Append-only, like the entries: the service's role may add, never change or remove.
grant select, insert on audit.leaf, audit.tree_hash, audit.checkpoint to pmcore_audit_log;

-- The audit API checks that a token's client is not disabled (pm.api_client's
-- columns granted in flyway/pm/V7); that needs the schema, nothing else in it.
grant usage on schema pm to pmcore_audit_log;
