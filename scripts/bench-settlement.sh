#!/usr/bin/env bash
# `just bench-settlement`: settle one completed event over a fleet with 45 days of
# 5-minute history per DER, against one plain SQL scan of the same rows.
#
# A release worker runs against its own database on the running stack. History for
# the largest fleet is loaded once, server-side (INSERT … SELECT generate_series;
# not timed), then for each fleet size an event over the first N DERs is completed
# and its settlement queued. For each size it reports the worker's own timing of the
# settlement (read, baseline, pay, reports to S3, store; from its log), the time of
# `select count(*), sum(power_kw)` over the same DERs and time range (warm, best of
# two), their ratio, and the worker's peak memory so far.
#
# PMCORE_BENCH_SIZES   fleet sizes, ascending (default "200 1000 2000")
# PMCORE_BENCH_DAYS    days of history (default 45)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

SIZES="${PMCORE_BENCH_SIZES:-200 1000 2000}"
DAYS="${PMCORE_BENCH_DAYS:-45}"
MAX=$(tr ' ' '\n' <<<"$SIZES" | sort -n | tail -1)

say "building the worker (release)"
cargo build --release --quiet --bin worker

dir="$PMCORE_STACK_DIR/bench-settlement"
rm -rf "$dir" && mkdir -p "$dir"
db="pmcore_bench_settlement"
admin_url="${PMCORE_DATABASE_URL%/*}/postgres"
db_url="${PMCORE_DATABASE_URL%/*}/$db"
psql -q "$admin_url" -c "drop database if exists $db with (force)" -c "create database $db"
env PMCORE_DATABASE_URL="$db_url" PMCORE_LOG=warn target/release/worker migrate >/dev/null
sql() { psql -qAtX -v ON_ERROR_STOP=1 "$db_url" "$@"; }

# The event day: the most recent Wednesday at least two days back (a weekday, so the
# 10-in-10 rule applies), 14:00–16:00 UTC.
event_day=$(python3 -c "
import datetime as d
t = d.date.today() - d.timedelta(days=2)
while t.weekday() != 2: t -= d.timedelta(days=1)
print(t)")
start="${event_day} 14:00:00+00"
end="${event_day} 16:00:00+00"
first_day=$(python3 -c "import datetime as d; print(d.date.fromisoformat('$event_day') - d.timedelta(days=$DAYS))")

say "loading $MAX DERs x $DAYS days of 5-minute history (~$((MAX * DAYS * 288 / 1000000)) M readings, not timed)"
load_started=$(date +%s)
sql <<SQL
insert into pm.organization (id, name, kind) values ('00000000-0000-7000-8000-000000000001', 'Bench aggregator', 'aggregator');
insert into pm.program (id, organization_id, name, kind, status, capacity_rate_cents_kw_month, energy_rate_cents_kwh, time_zone)
  values ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000001', 'Bench DR', 'demand_response', 'active', 600, 50, 'UTC');
insert into pm.gateway (id, organization_id, name, secret_hash)
  values ('00000000-0000-7000-8000-000000000003', '00000000-0000-7000-8000-000000000001', 'bench', 'x');
insert into pm.der (id, organization_id, gateway_id, der_type, nameplate_kw)
  select ('00000000-0000-7000-9000-' || lpad(to_hex(n), 12, '0'))::uuid,
         '00000000-0000-7000-8000-000000000001', '00000000-0000-7000-8000-000000000003', 'thermostat', 5
    from generate_series(1, $MAX) n;
select pm.ensure_telemetry_partition(d::date) from generate_series('$first_day'::date, '$event_day'::date, interval '1 day') d;
SQL
# One day per statement keeps each transaction and its WAL modest.
for offset in $(seq 0 "$DAYS"); do
  sql <<SQL
insert into pm.telemetry (der_id, ts, power_kw)
select d.id, ts,
       -- A daily shape with per-DER noise; 40 % less during the event.
       (2 + sin(extract(epoch from ts) / 13751.0) + (hashtext(d.id::text || ts::text) % 100) / 200.0)
       * case when ts >= '$start' and ts < '$end' then 0.6 else 1 end
  from pm.der d,
       generate_series('$first_day'::date + $offset, '$first_day'::date + $offset + interval '1 day' - interval '5 minutes', interval '5 minutes') ts
 where ts < '$end';
SQL
done
sql -c "vacuum analyze pm.telemetry" >/dev/null
rows=$(sql -c "select count(*) from pm.telemetry")
say "loaded $rows readings in $(( $(date +%s) - load_started )) s"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
env PMCORE_DATABASE_URL="$db_url" PMCORE_KAFKA_TOPIC_PREFIX="benchs$(date +%s)." PMCORE_LOG=info \
  PMCORE_LOG_FORMAT=text PMCORE_WORKER_LISTEN="127.0.0.1:$port" PMCORE_WORKER_SETTLE_TICK_MS=100 \
  target/release/worker >"$dir/worker.log" 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null; wait 2>/dev/null || true' EXIT
until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do sleep 0.3; done

printf '\n%8s %12s %12s %10s %14s %14s\n' DERs readings settle_s scan_s settle/scan "worker peak MB" | tee "$dir/results.txt"
for n in $SIZES; do
  event=$(python3 -c "import uuid; print(uuid.uuid4())")
  sql <<SQL
insert into pm.dispatch_event (id, program_id, starts_at, ends_at, target_kw, signal, signal_value, created_by,
    status, started_at, completed_at)
  values ('$event', '00000000-0000-7000-8000-000000000002', '$start', '$end', 1, 'curtail_kw', 1, 'bench',
          'completed', '$start', '$end');
insert into pm.dispatch_allocation (event_id, der_id, gateway_id, organization_id, committed_kw, allocated_kw,
    command_id, command_kind, command_value_kw, command_sent_at)
  select '$event', id, gateway_id, organization_id, 1, 1, gen_random_uuid(), 'curtail_kw', 1, '$start'
    from pm.der order by id limit $n;
SQL
  # The rows settlement reads: the method's lookback (46 days) to the event day's end.
  scan="select count(*), sum(power_kw) from pm.telemetry
         where der_id = any(array(select der_id from pm.dispatch_allocation where event_id = '$event'))
           and ts >= timestamptz '$start' - interval '46 days' and ts < timestamptz '$event_day'::date + 1"
  best=""
  for _ in 1 2; do
    t0=$(date +%s.%N); read_rows=$(sql -c "$scan" | cut -d'|' -f1); t1=$(date +%s.%N)
    t=$(python3 -c "print($t1 - $t0)")
    best=$(python3 -c "print(min(x for x in [$t, ${best:-$t}]))")
  done
  sql -c "insert into pm.settlement_request (event_id, version, due_at, reason, requested_by)
          values ('$event', 1, now() - interval '1 day', 'bench', 'bench')"
  plain() { sed 's/\x1b\[[0-9;]*m//g' "$dir/worker.log"; }
  until plain | grep -q "event_id=$event"; do
    if plain | grep -q "settlement failed"; then say "settlement failed:"; tail -5 "$dir/worker.log"; exit 1; fi
    sleep 0.2
  done
  settle=$(plain | grep "event_id=$event" | sed -E 's/.*seconds=([0-9.]+).*/\1/')
  peak=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$worker/status")
  printf '%8s %12s %12.2f %10.2f %14.2f %14s\n' "$n" "$read_rows" "$settle" "$best" \
    "$(python3 -c "print($settle / $best)")" "$peak" | tee -a "$dir/results.txt"
done
say "results in $dir/results.txt; $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB"
