-- Telemetry, dispatch commands and anomalies (issue 4).

-- Raw readings, one row per DER and instant, partitioned by day (UTC). The primary
-- key is what makes redelivered batches harmless (insert ... on conflict do nothing)
-- and is also the index of per-DER range reads. No foreign key to pm.der: the relay
-- only lets a gateway report its own DERs, and a per-row check would cost the
-- pipeline a third of its throughput.
create table pm.telemetry (
    der_id       uuid not null,
    ts           timestamptz not null,
    power_kw     double precision not null,
    soc_pct      real,
    received_at  timestamptz not null default now(),
    constraint telemetry_pkey primary key (der_id, ts)
) partition by range (ts);

-- One-minute rollups, maintained with the raw rows in the same transaction from the
-- rows that were actually inserted, so redelivery cannot count a reading twice.
-- Reads at 1 min and coarser come from here: a week of 1 Hz data is 10,080 rows
-- instead of 604,800.
create table pm.telemetry_1m (
    der_id       uuid not null,
    bucket       timestamptz not null,
    sum_kw       double precision not null,
    min_kw       double precision not null,
    max_kw       double precision not null,
    samples      integer not null,
    constraint telemetry_1m_pkey primary key (der_id, bucket)
) partition by range (bucket);

-- Creates the day's partitions of both tables when missing. Security definer: the
-- service roles insert rows but do not own tables.
create function pm.ensure_telemetry_partition(day date) returns void
language plpgsql security definer set search_path = pg_catalog, pm as $$
declare
    suffix text := to_char(day, 'YYYYMMDD');
begin
    execute format(
        'create table if not exists pm.%I partition of pm.telemetry for values from (%L) to (%L)',
        'telemetry_' || suffix, day::timestamp at time zone 'UTC', (day + 1)::timestamp at time zone 'UTC');
    execute format(
        'create table if not exists pm.%I partition of pm.telemetry_1m for values from (%L) to (%L)',
        'telemetry_1m_' || suffix, day::timestamp at time zone 'UTC', (day + 1)::timestamp at time zone 'UTC');
end;
$$;

-- Drops whole days older than `keep_days` (retention is a partition drop, never a delete).
create function pm.drop_telemetry_partitions(keep_days integer) returns integer
language plpgsql security definer set search_path = pg_catalog, pm as $$
declare
    part record;
    dropped integer := 0;
    cutoff text := to_char((now() at time zone 'UTC')::date - keep_days, 'YYYYMMDD');
begin
    for part in
        select c.relname from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        join pg_class p on p.oid = i.inhparent
        join pg_namespace n on n.oid = p.relnamespace
        where n.nspname = 'pm' and p.relname in ('telemetry', 'telemetry_1m')
          and right(c.relname, 8) < cutoff
    loop
        execute format('drop table pm.%I', part.relname);
        dropped := dropped + 1;
    end loop;
    return dropped;
end;
$$;

-- A dispatch command for one DER, as the relay received it from der.commands.v1.
-- Kept until acknowledged or expired, so a gateway that is offline gets it when it
-- reconnects to any relay instance.
create table pm.der_command (
    id            uuid primary key,
    gateway_id    uuid not null,
    der_id        uuid not null,
    event_id      uuid,
    kind          text not null,
    value_kw      double precision not null,
    start_at      timestamptz not null,
    end_at        timestamptz not null,
    expires_at    timestamptz not null,
    status        text not null default 'pending',
    reason        text,
    received_at   timestamptz not null default now(),
    delivered_at  timestamptz,
    acked_at      timestamptz,
    constraint der_command_kind_check check (kind in ('curtail_kw', 'setpoint_kw', 'release')),
    constraint der_command_status_check check (
        status in ('pending', 'received', 'applied', 'rejected', 'expired')
    )
);
create index der_command_pending_idx on pm.der_command (gateway_id, expires_at) where status = 'pending';
create index der_command_event_idx on pm.der_command (event_id);

-- Flags raised by the worker on the telemetry stream.
create table pm.telemetry_anomaly (
    id               uuid primary key,
    organization_id  uuid not null,
    der_id           uuid,
    gateway_id       uuid,
    kind             text not null,
    detail           text not null,
    value_kw         double precision,
    observed_at      timestamptz not null,
    detected_at      timestamptz not null default now(),
    constraint telemetry_anomaly_kind_check check (kind in ('out_of_range', 'stuck_value', 'gateway_silent'))
);
create index telemetry_anomaly_der_idx on pm.telemetry_anomaly (der_id, detected_at desc);
create index telemetry_anomaly_org_idx on pm.telemetry_anomaly (organization_id, detected_at desc);

-- The relay session that holds the gateway, so a late disconnect of an older
-- session (the gateway reconnected elsewhere first) does not mark it offline.
alter table pm.gateway add column session_id uuid;
-- At most one open gateway_silent flag per silence, whichever worker finds it.
create unique index telemetry_anomaly_silence_key on pm.telemetry_anomaly (gateway_id, observed_at)
    where kind = 'gateway_silent';

-- Partitions for the last 15 days (history backfill) and the next week; the worker
-- and the scheduler keep creating them ahead.
select pm.ensure_telemetry_partition((now() at time zone 'UTC')::date + d)
from generate_series(-15, 7) as d;

grant select, insert, update on pm.der_command to pmcore_relay;
grant select, insert on pm.inbox to pmcore_relay;
grant select, insert, delete on pm.outbox to pmcore_relay;
grant select, insert, update, delete on pm.telemetry, pm.telemetry_1m, pm.der_command,
    pm.telemetry_anomaly to pmcore_api, pmcore_worker, pmcore_scheduler;
grant execute on function pm.ensure_telemetry_partition(date) to pmcore_worker, pmcore_scheduler;
grant execute on function pm.drop_telemetry_partitions(integer) to pmcore_scheduler;
