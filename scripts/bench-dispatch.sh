#!/usr/bin/env bash
# `just bench-dispatch`: one dispatch event over a large simulated fleet, end to end.
#
# Release builds of the api, relay, worker and scheduler run against their own
# database and topic prefix on the running stack; gateway-sim plays the fleet (one
# reading per DER every 10 s, so telemetry does not crowd the measurement). An event
# over every DER starts 20 s after the fleet is up. Per DER it reports, from the
# event's start: when its command was stored by a relay (it was on the topic), when a
# relay handed it to the gateway, and when the gateway's `applied` was recorded
# (p50/p99/max), and the scheduler's and relay's CPU seconds and peak memory.
#
# PMCORE_BENCH_FLEET   gateways x DERs per gateway (default 200x50 = 10,000 DERs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

FLEET="${PMCORE_BENCH_FLEET:-200x50}"
GATEWAYS="${FLEET%x*}"
DERS_PER_GATEWAY="${FLEET#*x}"
DERS=$((GATEWAYS * DERS_PER_GATEWAY))

say "building api, relay, worker, scheduler and simulator (release)"
cargo build --release --quiet --bin api --bin der-gateway-relay --bin worker --bin scheduler \
  --bin gateway-sim --bin seed

dir="$PMCORE_STACK_DIR/bench-dispatch"
rm -rf "$dir" && mkdir -p "$dir"
db="pmcore_bench_dispatch"
admin_url="${PMCORE_DATABASE_URL%/*}/postgres"
db_url="${PMCORE_DATABASE_URL%/*}/$db"
psql -q "$admin_url" -c "drop database if exists $db with (force)" -c "create database $db"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port); relay_port=$(free_port); api_ops=$(free_port); relay_ops=$(free_port); worker_port=$(free_port); scheduler_port=$(free_port)
prefix="benchd$(date +%s)."
common=(env PMCORE_DATABASE_URL="$db_url" PMCORE_KAFKA_TOPIC_PREFIX="$prefix" PMCORE_LOG=warn PMCORE_LOG_FORMAT=text)

"${common[@]}" target/release/api migrate >/dev/null
"${common[@]}" PMCORE_API_LISTEN="127.0.0.1:$api_port" PMCORE_API_OPS_LISTEN="127.0.0.1:$api_ops" PMCORE_API_RATE_LIMIT_PER_SECOND=100000 \
  PMCORE_API_RATE_LIMIT_BURST=100000 target/release/api >"$dir/api.log" 2>&1 &
pids=($!)
"${common[@]}" PMCORE_RELAY_LISTEN="127.0.0.1:$relay_port" PMCORE_RELAY_OPS_LISTEN="127.0.0.1:$relay_ops" PMCORE_DATABASE_MAX_CONNECTIONS=20 \
  target/release/der-gateway-relay >"$dir/relay.log" 2>&1 &
pids+=($!)
"${common[@]}" PMCORE_WORKER_LISTEN="127.0.0.1:$worker_port" target/release/worker >"$dir/worker.log" 2>&1 &
pids+=($!)
"${common[@]}" PMCORE_SCHEDULER_LISTEN="127.0.0.1:$scheduler_port" target/release/scheduler >"$dir/scheduler.log" 2>&1 &
pids+=($!)
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
for port in "$api_ops" "$relay_ops" "$worker_port" "$scheduler_port"; do
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do sleep 0.3; done
done
relay_pid=${pids[1]}; scheduler_pid=${pids[3]}

say "provisioning $GATEWAYS gateways x $DERS_PER_GATEWAY DERs through the api"
api="http://127.0.0.1:$api_port"
target/release/seed --api "$api" --ders-per-aggregator 0 --gateways-per-aggregator 0 \
  --credentials "$dir/credentials.json" >/dev/null 2>&1
target/release/gateway-sim provision --api "$api" --credentials "$dir/credentials.json" \
  --fleet "$dir/fleet.json" --count "$GATEWAYS" --ders-per-gateway "$DERS_PER_GATEWAY" --label bench 2>&1 | tail -1

sql() { PGOPTIONS='-c client_min_messages=warning' psql -Atq "$db_url" -c "$1"; }
say "enrolling every DER (1 kW each) in a running program"
program=$(sql "select id from pm.program where status = 'active' limit 1")
sql "insert into pm.enrollment (id, program_id, der_id, organization_id, committed_kw, status)
     select gen_random_uuid(), '$program', d.id, d.organization_id, least(1, d.nameplate_kw), 'active'
       from pm.der d where d.gateway_id is not null
         and not exists (select 1 from pm.enrollment n where n.der_id = d.id and n.program_id = '$program')" >/dev/null
enrolled=$(sql "select count(*) from pm.enrollment where program_id = '$program' and status = 'active'")

say "starting the fleet ($DERS DERs, a reading every 10 s)"
target/release/gateway-sim run --relay "ws://127.0.0.1:$relay_port/v1/gateway" --fleet "$dir/fleet.json" \
  --reading-interval-ms 10000 --batch-interval-ms 1000 --duration-s 180 --report-every-s 60 \
  >"$dir/sim.json" 2>"$dir/sim.log" &
sim_pid=$!
pids+=("$sim_pid")
until [ "$(sql "select count(*) from pm.gateway where online")" -ge "$GATEWAYS" ]; do sleep 1; done

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
before_relay=$(cpu_of "$relay_pid"); before_scheduler=$(cpu_of "$scheduler_pid")
event=$(python3 -c 'import uuid; print(uuid.uuid4())')
sql "insert into pm.dispatch_event (id, program_id, starts_at, ends_at, target_kw, signal, signal_value, created_by)
     values ('$event', '$program', date_trunc('second', now()) + interval '20 seconds',
             date_trunc('second', now()) + interval '20 minutes', $enrolled * 0.8, 'curtail_kw', 0, 'bench')"
starts=$(sql "select starts_at from pm.dispatch_event where id = '$event'")
say "event $event over $enrolled DERs starts at $starts"

waited=0
until [ "$(sql "select count(*) from pm.der_command where event_id = '$event' and status = 'applied'")" -ge "$enrolled" ] \
      || [ $waited -ge 240 ]; do sleep 1; waited=$((waited + 1)); done
relay_cpu=$(python3 -c "print(round(($(cpu_of "$relay_pid") - $before_relay) / $tick, 1))")
scheduler_cpu=$(python3 -c "print(round(($(cpu_of "$scheduler_pid") - $before_scheduler) / $tick, 1))")
relay_rss=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$relay_pid/status")
scheduler_rss=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$scheduler_pid/status")

stats() { # stats COLUMN: p50 p99 max in ms from the event's start, and how many
  sql "select round((percentile_cont(0.5) within group (order by ms))::numeric),
              round((percentile_cont(0.99) within group (order by ms))::numeric),
              round(max(ms)::numeric), count(*)
         from (select extract(epoch from c.$1 - e.starts_at) * 1000 as ms
                 from pm.der_command c join pm.dispatch_event e on e.id = c.event_id
                where c.event_id = '$event' and c.kind <> 'release' and c.$1 is not null) t" | tr '|' ' '
}
read -r s50 s99 smax sn < <(stats received_at)
read -r d50 d99 dmax dn < <(stats delivered_at)
read -r a50 a99 amax an < <(sql "select round((percentile_cont(0.5) within group (order by ms))::numeric),
              round((percentile_cont(0.99) within group (order by ms))::numeric), round(max(ms)::numeric), count(*)
         from (select extract(epoch from c.acked_at - e.starts_at) * 1000 as ms
                 from pm.der_command c join pm.dispatch_event e on e.id = c.event_id
                where c.event_id = '$event' and c.kind <> 'release' and c.status = 'applied') t" | tr '|' ' ')
late=$(sql "select late_by_ms from pm.dispatch_event where id = '$event'")
sent=$(sql "select count(*) from pm.dispatch_allocation where event_id = '$event' and command_sent_at is not null")
dups=$(sql "select count(*) - count(distinct der_id) from pm.der_command where event_id = '$event' and kind <> 'release'")

cat <<EOF

dispatch fan-out: $GATEWAYS gateways, $enrolled participating DERs, $(nproc) cores, $(date -u +%F)
  event started $late ms after its start; commands in the outbox: $sent; duplicates: $dups
  from the event's start, per DER (ms)     p50     p99     max   count
  stored by a relay (on the topic)     $(printf '%7s %7s %7s %7s' "$s50" "$s99" "$smax" "$sn")
  delivered to the gateway             $(printf '%7s %7s %7s %7s' "$d50" "$d99" "$dmax" "$dn")
  acknowledged applied                 $(printf '%7s %7s %7s %7s' "$a50" "$a99" "$amax" "$an")
  CPU seconds from start to all applied: scheduler $scheduler_cpu, relay $relay_cpu
  peak memory: scheduler ${scheduler_rss} MB, relay ${relay_rss} MB
EOF
