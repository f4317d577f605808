-- The domain of the REST API: API clients, programs' rules, gateways, the DER
-- warehouse, enrollments and dispatch events. Every list the API serves is keyset
-- paginated on (filter, id), so each filter has an index ending in id.

-- API clients (OAuth2 client credentials) -------------------------------------------

create table pm.api_client (
    id              uuid primary key,
    organization_id uuid not null,
    name            text not null,
    secret_hash     text not null,
    roles           text[] not null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    disabled_at     timestamptz,
    constraint api_client_organization_fkey foreign key (organization_id) references pm.organization (id),
    constraint api_client_roles_check check (
        cardinality(roles) > 0
        and roles <@ array['admin', 'program_manager', 'operator', 'aggregator', 'auditor', 'viewer']
    )
);
create index api_client_organization_idx on pm.api_client (organization_id, id);

-- Programs: rules and limits ----------------------------------------------------------

alter table pm.program
    add column description                text not null default '',
    add column time_zone                  text not null default 'UTC',
    add column target_capacity_kw         numeric(12, 3) not null default 0,
    add column capacity_rate_cents_kw_month bigint not null default 0,
    add column energy_rate_cents_kwh      bigint not null default 0,
    add column baseline_method            text not null default 'x_of_y_10_10',
    add column eligible_der_types         text[] not null default '{}',
    add column min_nameplate_kw           numeric(12, 3) not null default 0,
    add column eligible_feeders           text[] not null default '{}',
    add column max_events_per_season      integer not null default 20,
    add column max_event_duration_minutes integer not null default 240,
    add column min_notice_minutes         integer not null default 60,
    add constraint program_limits_check check (
        target_capacity_kw >= 0 and capacity_rate_cents_kw_month >= 0 and energy_rate_cents_kwh >= 0
        and min_nameplate_kw >= 0 and max_events_per_season > 0
        and max_event_duration_minutes > 0 and min_notice_minutes >= 0
    ),
    add constraint program_baseline_check check (
        baseline_method in ('x_of_y_10_10', 'x_of_y_high_4_5', 'meter_before_after')
    );
create index program_status_idx on pm.program (status, id);

-- Gateways ------------------------------------------------------------------------------

create table pm.gateway (
    id                uuid primary key,
    organization_id   uuid not null,
    name              text not null,
    secret_hash       text not null,
    firmware          text,
    online            boolean not null default false,
    last_seen_at      timestamptz,
    secret_rotated_at timestamptz not null default now(),
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    constraint gateway_organization_fkey foreign key (organization_id) references pm.organization (id)
);
create index gateway_organization_idx on pm.gateway (organization_id, id);

-- The DER warehouse ----------------------------------------------------------------------

create table pm.der (
    id              uuid primary key,
    organization_id uuid not null,
    gateway_id      uuid,
    external_id     text,
    der_type        text not null,
    nameplate_kw    numeric(12, 3) not null,
    nameplate_kwh   numeric(12, 3),
    latitude        double precision,
    longitude       double precision,
    feeder          text,
    substation      text,
    status          text not null default 'active',
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint der_organization_fkey foreign key (organization_id) references pm.organization (id),
    constraint der_gateway_fkey foreign key (gateway_id) references pm.gateway (id),
    constraint der_type_check check (
        der_type in ('solar_pv', 'battery', 'ev_charger', 'thermostat', 'water_heater', 'ci_load')
    ),
    constraint der_status_check check (status in ('active', 'decommissioned')),
    constraint der_nameplate_check check (nameplate_kw > 0 and (nameplate_kwh is null or nameplate_kwh > 0)),
    constraint der_location_check check (
        (latitude is null or latitude between -90 and 90) and (longitude is null or longitude between -180 and 180)
    ),
    constraint der_external_id_key unique (organization_id, external_id)
);
create index der_organization_idx on pm.der (organization_id, id);
create index der_type_idx on pm.der (der_type, id);
create index der_feeder_idx on pm.der (feeder, id);
create index der_substation_idx on pm.der (substation, id);
create index der_gateway_idx on pm.der (gateway_id, id);
create index der_status_idx on pm.der (status, id);

-- Enrollments ------------------------------------------------------------------------------

create table pm.enrollment (
    id              uuid primary key,
    program_id      uuid not null,
    der_id          uuid not null,
    organization_id uuid not null,
    committed_kw    numeric(12, 3) not null,
    status          text not null default 'requested',
    reason          text,
    eligibility     jsonb,
    decided_by      text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint enrollment_program_fkey foreign key (program_id) references pm.program (id),
    constraint enrollment_der_fkey foreign key (der_id) references pm.der (id),
    constraint enrollment_organization_fkey foreign key (organization_id) references pm.organization (id),
    constraint enrollment_status_check check (
        status in ('requested', 'approved', 'rejected', 'active', 'withdrawn')
    ),
    constraint enrollment_committed_check check (committed_kw > 0)
);
-- A DER holds at most one live enrollment per program.
create unique index enrollment_live_key on pm.enrollment (program_id, der_id)
    where status in ('requested', 'approved', 'active');
create index enrollment_program_idx on pm.enrollment (program_id, id);
create index enrollment_der_idx on pm.enrollment (der_id, id);
create index enrollment_organization_idx on pm.enrollment (organization_id, id);

-- Dispatch events ---------------------------------------------------------------------------

create table pm.dispatch_event (
    id               uuid primary key,
    program_id       uuid not null,
    starts_at        timestamptz not null,
    ends_at          timestamptz not null,
    target_kw        numeric(12, 3) not null,
    signal           text not null,
    signal_value     numeric(12, 3) not null,
    status           text not null default 'scheduled',
    cancelled_reason text,
    created_by       text not null,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint dispatch_event_program_fkey foreign key (program_id) references pm.program (id),
    constraint dispatch_event_window_check check (ends_at > starts_at),
    constraint dispatch_event_signal_check check (signal in ('curtail_kw', 'setpoint_kw', 'price')),
    constraint dispatch_event_status_check check (
        status in ('scheduled', 'active', 'completed', 'cancelled')
    ),
    constraint dispatch_event_target_check check (target_kw > 0)
);
create index dispatch_event_program_idx on pm.dispatch_event (program_id, starts_at, id);
create index dispatch_event_window_idx on pm.dispatch_event (starts_at, id);

create table pm.dispatch_opt_out (
    event_id   uuid not null,
    der_id     uuid not null,
    reason     text,
    created_at timestamptz not null default now(),
    constraint dispatch_opt_out_pkey primary key (event_id, der_id),
    constraint dispatch_opt_out_event_fkey foreign key (event_id) references pm.dispatch_event (id),
    constraint dispatch_opt_out_der_fkey foreign key (der_id) references pm.der (id)
);

-- Privileges: the new tables follow V1's grants ----------------------------------------------

grant select, insert, update, delete on
    pm.api_client, pm.gateway, pm.der, pm.enrollment, pm.dispatch_event, pm.dispatch_opt_out
    to pmcore_api, pmcore_worker, pmcore_scheduler;
grant select, update on pm.gateway to pmcore_relay;
grant select on pm.der to pmcore_relay;
grant select on pm.api_client to pmcore_audit_log, pmcore_messaging;
