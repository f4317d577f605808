-- pmcore foundation: schemas per owner, the outbox and inboxes, the first domain
-- tables, the audit trail, and one least-privilege role per service.
--
-- Released migrations are never edited; add V2__… instead.

create schema if not exists pm;
create schema if not exists audit;
create schema if not exists messaging;

-- Roles are cluster-wide and several databases (one per test) may migrate at once,
-- so creation tolerates a role that already exists or is being created concurrently.
do $$
declare
    r text;
begin
    foreach r in array array[
        'pmcore_api', 'pmcore_worker', 'pmcore_scheduler', 'pmcore_bucket_watcher',
        'pmcore_audit_log', 'pmcore_messaging', 'pmcore_relay'
    ] loop
        begin
            execute format('create role %I nologin', r);
        exception
            when duplicate_object or unique_violation then null;
        end;
    end loop;
end
$$;

-- Domain ------------------------------------------------------------------------

create table pm.organization (
    id          uuid primary key,
    name        text not null,
    kind        text not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint organization_kind_check check (kind in ('utility', 'aggregator', 'customer')),
    constraint organization_name_key unique (name)
);

create table pm.program (
    id              uuid primary key,
    organization_id uuid not null,
    name            text not null,
    kind            text not null,
    status          text not null default 'draft',
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint program_organization_fkey foreign key (organization_id) references pm.organization (id),
    constraint program_kind_check check (kind in ('demand_response', 'capacity', 'flexibility')),
    constraint program_status_check check (status in ('draft', 'open', 'active', 'closed'))
);
create index program_organization_idx on pm.program (organization_id, id);

-- Delivery ----------------------------------------------------------------------

-- Events waiting to be published. A row is inserted in the transaction that makes
-- the state change and deleted once the broker acknowledged it.
create table pm.outbox (
    id          bigint generated always as identity primary key,
    topic       text not null,
    key         text not null,
    headers     jsonb not null,
    payload     bytea not null,
    created_at  timestamptz not null default now()
);

-- Events a consumer has handled, written in the same transaction as their effects.
create table pm.inbox (
    consumer     text not null,
    event_id     uuid not null,
    processed_at timestamptz not null default now(),
    constraint inbox_pkey primary key (consumer, event_id)
);
create table audit.inbox (like pm.inbox including all);
create table messaging.inbox (like pm.inbox including all);

-- Audit -------------------------------------------------------------------------

-- Append-only: no role but the owner may update or delete.
create table audit.entry (
    seq          bigint generated always as identity primary key,
    event_id     uuid not null,
    event_type   text not null,
    source       text not null,
    subject      text not null,
    principal    text,
    occurred_at  timestamptz not null,
    recorded_at  timestamptz not null default now(),
    topic        text not null,
    payload      jsonb not null
);
create index entry_subject_idx on audit.entry (subject, seq);

-- Privileges --------------------------------------------------------------------

grant usage on schema pm to pmcore_api, pmcore_worker, pmcore_scheduler, pmcore_bucket_watcher,
    pmcore_messaging, pmcore_relay;
grant select, insert, update, delete on all tables in schema pm
    to pmcore_api, pmcore_worker, pmcore_scheduler;
grant select, insert, delete on pm.outbox, pm.inbox to pmcore_bucket_watcher;
grant select on pm.organization to pmcore_messaging, pmcore_relay;

grant usage on schema audit to pmcore_audit_log;
grant select, insert on all tables in schema audit to pmcore_audit_log;

grant usage on schema messaging to pmcore_messaging;
grant select, insert, update, delete on all tables in schema messaging to pmcore_messaging;
