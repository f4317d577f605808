-- Dispatch execution: the scheduler starts and ends events, allocates the target
-- across the participating DERs and fans out one command per DER, then a release.

alter table pm.dispatch_event drop constraint dispatch_event_status_check;
alter table pm.dispatch_event add constraint dispatch_event_status_check check (
    status in ('scheduled', 'active', 'completed', 'cancelled', 'missed')
);
alter table pm.dispatch_event
    add column started_at        timestamptz,
    add column completed_at      timestamptz,
    -- started_at - starts_at when a scheduler started it late (it was down).
    add column late_by_ms        bigint,
    add column allocated_kw      numeric(12, 3),
    add column participant_count integer;
-- The scheduler's due work: events to start, end or mark missed.
create index dispatch_event_due_idx on pm.dispatch_event (starts_at)
    where status in ('scheduled', 'active');

-- One row per participating DER, written when the event starts. The command and its
-- release are each put in the outbox in the transaction that sets *_sent_at, so each
-- is produced exactly once however often the scheduler restarts.
create table pm.dispatch_allocation (
    event_id        uuid not null,
    der_id          uuid not null,
    gateway_id      uuid not null,
    organization_id uuid not null,
    committed_kw    numeric(12, 3) not null,
    allocated_kw    numeric(12, 3) not null,
    command_id      uuid not null,
    command_kind    text not null,
    command_value_kw double precision not null,
    command_sent_at timestamptz,
    release_id      uuid,
    release_sent_at timestamptz,
    -- 'completed', 'cancelled' or 'opted_out'
    release_reason  text,
    constraint dispatch_allocation_pkey primary key (event_id, der_id),
    constraint dispatch_allocation_event_fkey foreign key (event_id) references pm.dispatch_event (id),
    constraint dispatch_allocation_der_fkey foreign key (der_id) references pm.der (id),
    constraint dispatch_allocation_command_key unique (command_id)
);
create index dispatch_allocation_unsent_idx on pm.dispatch_allocation (event_id, der_id)
    where command_sent_at is null;
create index dispatch_allocation_unreleased_idx on pm.dispatch_allocation (event_id, der_id)
    where command_sent_at is not null and release_sent_at is null;
create index dispatch_allocation_organization_idx on pm.dispatch_allocation (event_id, organization_id, der_id);

-- Reminders sent, one per event and lead time.
create table pm.dispatch_reminder (
    event_id     uuid not null,
    lead_minutes integer not null,
    sent_at      timestamptz not null,
    constraint dispatch_reminder_pkey primary key (event_id, lead_minutes),
    constraint dispatch_reminder_event_fkey foreign key (event_id) references pm.dispatch_event (id)
);

grant select, insert, update on pm.dispatch_allocation, pm.dispatch_reminder to pmcore_scheduler;
grant select on pm.dispatch_allocation, pm.dispatch_reminder to pmcore_api, pmcore_worker;
