-- One login per service, a member of the service's role (V1__init.sql), so each
-- service connects with only its role's privileges; the owner (`pmcore`) only
-- migrates. Logins are deployment configuration, not schema, so this is not a
-- migration: the stacks (scripts/stack.sh, docker-compose.yml) and the test kit run it
-- after the migrations, with the password in the setting `pmcore.app_password`.
-- Cluster-wide, safe to run again and from several sessions at once.
do $$
declare
    svc text;
    login text;
begin
    foreach svc in array array[
        'api', 'worker', 'scheduler', 'bucket_watcher', 'audit_log', 'messaging', 'relay'
    ] loop
        login := 'pmcore_' || svc || '_app';
        begin
            execute format('create role %I login in role %I', login, 'pmcore_' || svc);
        exception
            when duplicate_object or unique_violation then null;
        end;
        begin
            execute format('alter role %I password %L', login,
                current_setting('pmcore.app_password'));
        exception
            -- Another session sets the same password at the same moment.
            when internal_error then null;
        end;
    end loop;
end
$$;
