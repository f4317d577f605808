-- Files: objects in the inbound bucket and their imports (issue 12).

-- One row per object version the bucket watcher noticed, or per upload the api
-- announced (`awaiting_upload`, no version yet). The unique version is the watcher's
-- ledger: two watchers, or one restarted, insert the same (bucket, key, version) and
-- only the first insert publishes `file.received`.
create table pm.file (
    id               uuid primary key,
    -- Null when the object's key names no organization that exists.
    organization_id  uuid,
    -- Null when the key names no known kind.
    kind             text,
    name             text not null,
    bucket           text not null,
    object_key       text not null,
    -- The S3 version id when the bucket is versioned, else `<etag>@<last modified>`.
    object_version   text,
    -- Last-modified as the listing reported it: the watcher skips listed objects it
    -- already holds without a HEAD request per object per poll.
    listed_modified  timestamptz,
    size_bytes       bigint,
    status           text not null,
    reason           text,
    rows_read        bigint not null default 0,
    rows_imported    bigint not null default 0,
    rows_rejected    bigint not null default 0,
    report_key       text,
    created_by       text,
    created_at       timestamptz not null default now(),
    received_at      timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz not null default now(),
    constraint file_organization_fkey foreign key (organization_id) references pm.organization (id),
    constraint file_kind_check check (kind in ('ders', 'enrollments', 'meter_data')),
    constraint file_status_check check (
        status in ('awaiting_upload', 'uploaded', 'importing', 'imported', 'rejected')
    ),
    constraint file_version_key unique (bucket, object_key, object_version)
);
create index file_organization_idx on pm.file (organization_id, id);
create index file_object_idx on pm.file (bucket, object_key);

-- Interval meter data from the utility's MDM, one row per DER and interval. Kept apart
-- from pm.telemetry on purpose: telemetry rows are instantaneous kW samples that the
-- rollups average, meter rows are energies over an interval of a stated length, and
-- mixing them would make both means wrong. The primary key makes a re-imported file
-- add nothing. No foreign key to pm.der, as for telemetry: the import already checks
-- each row's DER against the uploading organization, and the per-row check made a
-- 1M-row import take 15 s instead of 8 s (`just bench-import`).
create table pm.meter_interval (
    der_id           uuid not null,
    interval_start   timestamptz not null,
    interval_minutes integer not null,
    energy_kwh       double precision not null,
    file_id          uuid not null,
    imported_at      timestamptz not null default now(),
    constraint meter_interval_pkey primary key (der_id, interval_start),
    constraint meter_interval_minutes_check check (interval_minutes in (5, 15, 30, 60))
);

-- Which readings a program's events are settled on: the gateways' telemetry, or the
-- utility's meter data (imported files).
alter table pm.program add column settlement_data_source text not null default 'telemetry',
    add constraint program_settlement_data_source_check check (
        settlement_data_source in ('telemetry', 'meter')
    );

grant select, insert on pm.file to pmcore_api;
grant select, insert, update on pm.file to pmcore_bucket_watcher, pmcore_worker;
grant select on pm.organization to pmcore_bucket_watcher;
grant select, insert on pm.meter_interval to pmcore_worker;
grant select on pm.meter_interval to pmcore_api;
