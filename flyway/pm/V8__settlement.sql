-- Measurement and settlement (issue 9): each completed event is measured against
-- its program's baseline method and settled; a recomputation is a new version and
-- never overwrites an older one.

-- Programs: method parameters, interval, holidays and the penalty/proration rules.
alter table pm.program drop constraint program_baseline_check;
alter table pm.program
    add column baseline_params           jsonb not null default '{}',
    add column interval_minutes          integer not null default 15,
    -- {"nerc": true, "extra": ["2026-12-24", ...]}
    add column holidays                  jsonb not null default '{"nerc": true, "extra": []}',
    add column penalty_rate_cents_kwh    bigint not null default 0,
    add column capacity_events_per_month integer not null default 4,
    add constraint program_baseline_check check (
        baseline_method in ('x_of_y_10_10', 'x_of_y_high_4_5', 'x_of_y_high_5_10',
                            'x_of_y_middle_8_10', 'meter_before_after')
    ),
    add constraint program_settlement_check check (
        interval_minutes in (1, 5, 15, 30, 60) and penalty_rate_cents_kwh >= 0
        and capacity_events_per_month > 0
        and jsonb_typeof(baseline_params) = 'object' and jsonb_typeof(holidays) = 'object'
    );

-- What is to be settled: version 1 when the event completes (due after the settle
-- delay, for late telemetry), later versions on request. The worker that computes
-- a version holds its row locked and marks it done in the same transaction.
create table pm.settlement_request (
    event_id     uuid not null,
    version      integer not null,
    due_at       timestamptz not null,
    reason       text not null,
    requested_by text not null,
    created_at   timestamptz not null default now(),
    done_at      timestamptz,
    -- Why a version could not be computed (e.g. the program's parameters are bad).
    error        text,
    constraint settlement_request_pkey primary key (event_id, version),
    constraint settlement_request_event_fkey foreign key (event_id) references pm.dispatch_event (id),
    constraint settlement_request_version_check check (version > 0)
);
create index settlement_request_due_idx on pm.settlement_request (due_at) where done_at is null;

-- One computed version of an event's measurement and settlement.
create table pm.settlement_run (
    id                 uuid primary key,
    event_id           uuid not null,
    version            integer not null,
    program_id         uuid not null,
    method             text not null,
    params             jsonb not null,
    interval_minutes   integer not null,
    reason             text not null,
    requested_by       text not null,
    computed_at        timestamptz not null,
    der_count          integer not null,
    measured_count     integer not null,
    committed_kw       numeric(14, 3) not null,
    baseline_kwh       numeric(16, 3) not null,
    actual_kwh         numeric(16, 3) not null,
    delivered_kwh      numeric(16, 3) not null,
    total_amount       numeric(16, 2) not null,
    -- Fleet series over the event day for the chart and the API:
    -- [{"start", "baseline_kw", "actual_kw"}] per interval.
    fleet              jsonb not null,
    report_key         text not null,
    chart_key          text not null,
    constraint settlement_run_event_version_key unique (event_id, version),
    constraint settlement_run_event_fkey foreign key (event_id) references pm.dispatch_event (id),
    constraint settlement_run_program_fkey foreign key (program_id) references pm.program (id)
);

-- Per DER and version: the baseline, what was delivered and what it earns.
create table pm.der_performance (
    run_id             uuid not null,
    der_id             uuid not null,
    organization_id    uuid not null,
    -- 'measured' or 'insufficient_data' (then no payment)
    status             text not null,
    reason             text,
    committed_kw       numeric(12, 3) not null,
    baseline_kwh       numeric(14, 3),
    actual_kwh         numeric(14, 3),
    delivered_kwh      numeric(14, 3),
    performance_factor numeric(6, 4),
    missing_intervals  integer,
    comparison_days    date[],
    adjustment         jsonb,
    -- [{"start", "baseline_kw", "actual_kw", "delivered_kw"}] per event interval
    intervals          jsonb,
    capacity_payment   numeric(14, 2) not null,
    energy_payment     numeric(14, 2) not null,
    penalty            numeric(14, 2) not null,
    total              numeric(14, 2) not null,
    constraint der_performance_pkey primary key (run_id, der_id),
    constraint der_performance_run_fkey foreign key (run_id) references pm.settlement_run (id),
    constraint der_performance_status_check check (status in ('measured', 'insufficient_data'))
);
create index der_performance_organization_idx on pm.der_performance (run_id, organization_id, der_id);

-- Per organization and version: the amounts owed for the event.
create table pm.settlement (
    id               uuid primary key,
    run_id           uuid not null,
    event_id         uuid not null,
    version          integer not null,
    program_id       uuid not null,
    organization_id  uuid not null,
    der_count        integer not null,
    measured_count   integer not null,
    committed_kw     numeric(14, 3) not null,
    delivered_kwh    numeric(16, 3) not null,
    capacity_payment numeric(16, 2) not null,
    energy_payment   numeric(16, 2) not null,
    penalty          numeric(16, 2) not null,
    total            numeric(16, 2) not null,
    currency         text not null default 'USD',
    event_starts_at  timestamptz not null,
    created_at       timestamptz not null,
    constraint settlement_run_organization_key unique (run_id, organization_id),
    constraint settlement_run_fkey foreign key (run_id) references pm.settlement_run (id),
    constraint settlement_organization_fkey foreign key (organization_id) references pm.organization (id)
);
create index settlement_organization_idx on pm.settlement (organization_id, event_starts_at, id);
create index settlement_event_idx on pm.settlement (event_id, version, id);

-- A DER's other events (never comparison days).
create index dispatch_allocation_der_idx on pm.dispatch_allocation (der_id, event_id);

grant select, insert, update on pm.settlement_request to pmcore_worker;
grant select, insert on pm.settlement_run, pm.der_performance, pm.settlement to pmcore_worker;
grant select, insert on pm.settlement_request to pmcore_api;
grant select on pm.settlement_run, pm.der_performance, pm.settlement to pmcore_api;
