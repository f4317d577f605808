-- Least privilege, for real now that every service connects with its own login
-- (flyway/logins/service-logins.sql) instead of the owner.

-- Functions are executable by PUBLIC by default: any role could drop all telemetry.
revoke execute on function pm.ensure_telemetry_partition(date) from public;
revoke execute on function pm.drop_telemetry_partitions(integer) from public;
grant execute on function pm.ensure_telemetry_partition(date) to pmcore_worker, pmcore_scheduler;
grant execute on function pm.drop_telemetry_partitions(integer) to pmcore_scheduler;

-- Retention keeps at least a week, whatever the caller passes: a negative or tiny
-- argument would otherwise drop today's and future days.
create or replace function pm.drop_telemetry_partitions(keep_days integer) returns integer
language plpgsql security definer set search_path = pg_catalog, pm as $$
declare
    part record;
    dropped integer := 0;
    cutoff text;
begin
    if keep_days is null or keep_days < 7 then
        raise exception 'telemetry retention must keep at least 7 days, not %', keep_days
            using errcode = '22023';
    end if;
    cutoff := to_char((now() at time zone 'UTC')::date - keep_days, 'YYYYMMDD');
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

-- API clients are the api's: the worker and the scheduler never touch them, and the
-- audit log and messaging (which will check tokens) may see who a client is, never
-- its secret hash.
revoke all on pm.api_client from pmcore_worker, pmcore_scheduler, pmcore_audit_log, pmcore_messaging;
grant select (id, organization_id, name, roles, created_at, updated_at, disabled_at)
    on pm.api_client to pmcore_audit_log, pmcore_messaging;
