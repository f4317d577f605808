-- Outbox rows the broker will never take (too large, refused as invalid) are parked
-- here with the broker's reason, so the rows behind them flow. An operator can look
-- at them, fix the cause and move a row back into pm.outbox by hand.
create table pm.outbox_dead (
    id          bigint primary key,
    topic       text not null,
    key         text not null,
    headers     jsonb not null,
    payload     bytea not null,
    created_at  timestamptz not null,
    error       text not null,
    parked_at   timestamptz not null default now()
);

grant select, insert on pm.outbox_dead
    to pmcore_api, pmcore_worker, pmcore_scheduler, pmcore_bucket_watcher, pmcore_relay;
