-- Messaging: who wants to hear what (webhook endpoints, email contacts), how it reads
-- (templates), and what was sent (messages, deliveries, attempts). Deliveries are the
-- queue: any number of messaging instances lease due rows with FOR UPDATE SKIP LOCKED,
-- so a restart loses nothing and no row is sent by two instances at once.

create table messaging.endpoint (
    id                 uuid primary key,
    organization_id    uuid not null,
    url                text not null,
    description        text not null default '',
    -- Empty: every notification kind.
    kinds              text[] not null default '{}',
    enabled            boolean not null default true,
    disabled_reason    text,
    rate_limit_per_s   integer,
    -- Signing secrets must be readable to sign, so they cannot be hashed: they are
    -- sealed (XChaCha20-Poly1305) with the service's key, never stored in clear.
    secret_sealed      bytea not null,
    -- The secret before the last rotation, valid until previous_expires_at.
    previous_sealed    bytea,
    previous_expires_at timestamptz,
    -- Start of the current run of failed attempts; cleared by any success.
    failing_since      timestamptz,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    constraint endpoint_organization_fkey foreign key (organization_id) references pm.organization (id),
    constraint endpoint_rate_limit_check check (rate_limit_per_s is null or rate_limit_per_s > 0)
);
create index endpoint_organization_idx on messaging.endpoint (organization_id, id);

create table messaging.contact (
    id              uuid primary key,
    organization_id uuid not null,
    email           text not null,
    name            text not null default '',
    kinds           text[] not null default '{}',
    created_at      timestamptz not null default now(),
    constraint contact_organization_fkey foreign key (organization_id) references pm.organization (id),
    constraint contact_email_key unique (organization_id, email)
);

-- An organization's own wording of a notification kind, over the built-in one.
create table messaging.template (
    organization_id uuid not null,
    kind            text not null,
    subject         text not null,
    body            text not null,
    updated_at      timestamptz not null default now(),
    constraint template_pkey primary key (organization_id, kind),
    constraint template_organization_fkey foreign key (organization_id) references pm.organization (id)
);

-- One notification to one organization. The source event and the organization
-- identify it, so a domain event read twice makes no second message.
create table messaging.message (
    id              uuid primary key,
    organization_id uuid not null,
    kind            text not null,
    source_event_id uuid not null,
    subject         text not null,
    data            jsonb not null,
    created_at      timestamptz not null,
    constraint message_source_key unique (source_event_id, organization_id, kind)
);
create index message_organization_idx on messaging.message (organization_id, id);

create table messaging.delivery (
    id              uuid primary key,
    message_id      uuid not null,
    endpoint_id     uuid,
    contact_id      uuid,
    -- 'pending' (due at next_attempt_at), 'delivered', 'failed' (every attempt
    -- failed), 'dropped' (the endpoint was disabled or deleted before it went out)
    status          text not null default 'pending',
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null,
    leased_until    timestamptz,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz not null,
    constraint delivery_message_fkey foreign key (message_id) references messaging.message (id),
    constraint delivery_target_check check ((endpoint_id is null) <> (contact_id is null)),
    constraint delivery_status_check check (status in ('pending', 'delivered', 'failed', 'dropped'))
);
-- Few indexes, none on leased_until: taking a lease then changes no indexed column
-- and, with room left on the page, is a HOT update that writes no index entry.
-- Every index costs an entry per row version, and each delivery has three.
alter table messaging.delivery set (fillfactor = 80);
create index delivery_message_idx on messaging.delivery (message_id);
create index delivery_due_idx on messaging.delivery (next_attempt_at) where status = 'pending';
-- A queue: rows pass through in seconds, each updated twice. Analysed and vacuumed
-- far more often than the defaults (10 % / 20 % of the table), so plans and the due
-- index keep up with a burst.
alter table messaging.delivery set (
    autovacuum_analyze_scale_factor = 0.005, autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000
);
create index delivery_endpoint_idx on messaging.delivery (endpoint_id) where status = 'pending';

create table messaging.attempt (
    id            bigint generated always as identity primary key,
    delivery_id   uuid not null,
    started_at    timestamptz not null,
    -- HTTP status, or the SMTP reply code
    status_code   integer,
    latency_ms    integer not null,
    -- The first 1 KiB of the answer.
    response      text,
    error         text,
    constraint attempt_delivery_fkey foreign key (delivery_id) references messaging.delivery (id)
);
create index attempt_delivery_idx on messaging.attempt (delivery_id, id);

grant select, insert, update, delete on messaging.endpoint, messaging.contact, messaging.template,
    messaging.message, messaging.delivery, messaging.attempt to pmcore_messaging;
-- Who a notification concerns: a program's owner, its enrolled organizations, an
-- event's participants, a settlement's payees. Only the columns that say so.
grant select (id, organization_id, name) on pm.program to pmcore_messaging;
grant select (program_id, organization_id, status) on pm.enrollment to pmcore_messaging;
grant select (event_id, organization_id) on pm.dispatch_allocation to pmcore_messaging;
grant select (run_id, organization_id) on pm.settlement to pmcore_messaging;
