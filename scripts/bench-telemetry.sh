#!/usr/bin/env bash
# `just bench-telemetry`: the telemetry pipeline end to end on this machine.
#
# Release builds of the api, the relay and the worker run against their own database
# and topic prefix on the running stack; the simulator drives the relay at increasing
# load (readings per second = DERs / reading interval). Per step it reports readings
# acknowledged at the gateways per second, readings stored per second, the delay from
# a reading's timestamp to its row (p50/p99), and the CPU seconds each process used.
# Then it times a plain COPY of the same rows into the same table, and the read API on
# a week of 1 Hz data at 15 minutes.
#
# PMCORE_BENCH_STEPS   reading intervals in ms (default "2000 1000 800")
# PMCORE_BENCH_SECONDS seconds per step (default 60)
# PMCORE_BENCH_FLEET   gateways x DERs per gateway (default 40x500 = 20,000 DERs)
# PMCORE_BENCH_STALL_S seconds without progress that fail the run (default 150)
#
# Per step: lag = readings acknowledged but not yet stored when the gateways stop;
# drain = seconds until the worker caught up; lost = still missing once it stopped
# moving. Any loss fails the run (exit 1) after the table.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

STEPS="${PMCORE_BENCH_STEPS:-2000 1000 800}"
# Seconds without a new row, while readings are missing, after which the worker counts
# as stuck (its watchdog rebuilds a stuck consumer after PMCORE_KAFKA_STALL_AFTER_S, 60).
STALL_S="${PMCORE_BENCH_STALL_S:-150}"
SECONDS_PER_STEP="${PMCORE_BENCH_SECONDS:-60}"
FLEET="${PMCORE_BENCH_FLEET:-40x500}"
GATEWAYS="${FLEET%x*}"
DERS_PER_GATEWAY="${FLEET#*x}"
DERS=$((GATEWAYS * DERS_PER_GATEWAY))

say "building api, relay, worker and simulator (release)"
cargo build --release --quiet --bin api --bin der-gateway-relay --bin worker --bin gateway-sim --bin seed

dir="$PMCORE_STACK_DIR/bench-telemetry"
rm -rf "$dir" && mkdir -p "$dir"
db="pmcore_bench_telemetry"
admin_url="${PMCORE_DATABASE_URL%/*}/postgres"
db_url="${PMCORE_DATABASE_URL%/*}/$db"
psql -q "$admin_url" -c "drop database if exists $db with (force)" -c "create database $db"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port); relay_port=$(free_port); api_ops=$(free_port); relay_ops=$(free_port); worker_port=$(free_port)
prefix="bench$(date +%s)."
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
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
for port in "$api_ops" "$relay_ops" "$worker_port"; do
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do sleep 0.3; done
done
relay_pid=${pids[1]}; worker_pid=${pids[2]}

say "provisioning $GATEWAYS gateways x $DERS_PER_GATEWAY DERs through the api"
api="http://127.0.0.1:$api_port"
target/release/seed --api "$api" --ders-per-aggregator 0 --gateways-per-aggregator 0 \
  --credentials "$dir/credentials.json" >/dev/null 2>&1
target/release/gateway-sim provision --api "$api" --credentials "$dir/credentials.json" \
  --fleet "$dir/fleet.json" --count "$GATEWAYS" --ders-per-gateway "$DERS_PER_GATEWAY" --label bench 2>&1 | tail -1

sql() { PGOPTIONS='-c client_min_messages=warning' psql -Atq "$db_url" -c "$1"; }
cpu_of() { # cpu_of PID...: CPU seconds (user + system) of the processes
  local total=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo $((total))
}
pids_of() { pgrep -f "$1" | tr '\n' ' '; }
tick=$(getconf CLK_TCK)
tansu_pids=$(pids_of 'tansu broker'); pg_pids=$(pgrep -u postgres postgres | tr '\n' ' ')

declare -a table stalled=()
stored_before=0
for interval in $STEPS; do
  rate=$((DERS * 1000 / interval))
  say "step: $DERS DERs every $interval ms = $rate readings/s offered, ${SECONDS_PER_STEP} s"
  before_relay=$(cpu_of "$relay_pid"); before_worker=$(cpu_of "$worker_pid")
  # shellcheck disable=SC2086
  before_tansu=$(cpu_of $tansu_pids); before_pg=$(cpu_of $pg_pids)
  started=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
  last_started=$started
  TIMEFORMAT='%U %S'
  { time target/release/gateway-sim run --relay "ws://127.0.0.1:$relay_port/v1/gateway" --fleet "$dir/fleet.json" \
      --reading-interval-ms "$interval" --batch-interval-ms 1000 --duration-s "$SECONDS_PER_STEP" \
      --report-every-s 10 >"$dir/summary-$interval.json" 2>"$dir/sim-$interval.log"; } 2>"$dir/sim-time-$interval"
  summary=$(cat "$dir/summary-$interval.json")
  sim_cpu=$(awk '{printf "%.0f", $1 + $2}' "$dir/sim-time-$interval")
  acked=$(echo "$summary" | python3 -c 'import json,sys; print(json.load(sys.stdin)["acked"])')
  secs=$(echo "$summary" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["seconds"], 1))')
  # Everything acknowledged must reach Postgres. How far behind the worker was when
  # the gateways stopped (lag) and how long it took to catch up (drain) are reported
  # apart; a reading counts as lost only if it is still missing once the worker has
  # stopped making progress, and a worker that stops while behind fails the run.
  expected=$((stored_before + acked))
  stored=$(sql 'select count(*) from pm.telemetry')
  lag=$(( expected > stored ? expected - stored : 0 ))
  drain_started=$SECONDS; last_progress=$SECONDS; last_count=$stored
  while [ "$stored" -lt "$expected" ] && [ $((SECONDS - last_progress)) -lt "$STALL_S" ]; do
    sleep 1
    stored=$(sql 'select count(*) from pm.telemetry')
    if [ "$stored" -gt "$last_count" ]; then last_progress=$SECONDS; last_count=$stored; fi
  done
  drain_s=$(( stored >= expected ? SECONDS - drain_started : -1 ))
  # Negative would mean rows for batches produced but not acknowledged when the
  # gateways stopped (they were stored; the gateway would have resent them).
  lost=$(( expected > stored ? expected - stored : 0 ))
  if [ "$lost" -gt 0 ]; then
    stalled+=("step $rate/s: the worker stopped with $lost acknowledged readings missing (no progress for ${STALL_S} s; see $dir/worker.log)")
    say "FAIL ${stalled[-1]}"
  fi
  stored_before=$stored
  read -r p50 p99 < <(sql "select round((percentile_cont(0.5) within group (order by extract(epoch from received_at - ts)) * 1000)::numeric),
                                round((percentile_cont(0.99) within group (order by extract(epoch from received_at - ts)) * 1000)::numeric)
                           from pm.telemetry where ts >= '$started'" | tr '|' ' ')
  relay_cpu=$(( ($(cpu_of "$relay_pid") - before_relay) / tick ))
  worker_cpu=$(( ($(cpu_of "$worker_pid") - before_worker) / tick ))
  # shellcheck disable=SC2086
  tansu_cpu=$(( ($(cpu_of $tansu_pids) - before_tansu) / tick ))
  # shellcheck disable=SC2086
  pg_cpu=$(( ($(cpu_of $pg_pids) - before_pg) / tick ))
  per_s=$(python3 -c "print(round($acked / $secs))")
  best=$per_s
  table+=("$(printf '%9s %10s %9s %8s %8s %8s %6s %6s   sim %3ss relay %3ss worker %3ss broker %3ss postgres %3ss' \
    "$rate" "$per_s" "$acked" "${p50}ms" "${p99}ms" "$lag" "${drain_s}s" "$lost" "$sim_cpu" "$relay_cpu" "$worker_cpu" "$tansu_cpu" "$pg_cpu")")
  say "${table[-1]}"
done

say "plain COPY of the last step's rows into the same table"
last_from=$last_started
copy_rows=$(sql "select count(*) from pm.telemetry where ts >= '$last_from'")
psql -Atq "$db_url" -c "\\copy (select der_id, ts, power_kw, soc_pct, received_at from pm.telemetry where ts >= '$last_from') to '$dir/rows.csv' csv"
sql "delete from pm.telemetry where ts >= '$last_from'" >/dev/null
copy_start=$(date +%s.%N)
psql -Atq "$db_url" -c "\\copy pm.telemetry (der_id, ts, power_kw, soc_pct, received_at) from '$dir/rows.csv' csv"
copy_secs=$(python3 -c "import time; print(round(time.time() - $copy_start, 2))")
copy_rate=$(python3 -c "print(round($copy_rows / $copy_secs))")

say "read API: one DER, a week of 1 Hz readings, at 15 minutes"
der=$(python3 -c "import json; print(json.load(open('$dir/fleet.json'))['gateways'][0]['ders'][0]['id'])")
for d in $(seq 0 8); do sql "select pm.ensure_telemetry_partition((now() at time zone 'UTC')::date - $d)" >/dev/null; done
sql "delete from pm.telemetry where der_id = '$der'; delete from pm.telemetry_1m where der_id = '$der';" >/dev/null
sql "with ins as (
       insert into pm.telemetry (der_id, ts, power_kw)
       select '$der', ts, 3 + sin(extract(epoch from ts) / 3600)
       from generate_series(date_trunc('second', now()) - interval '7 days', date_trunc('second', now()) - interval '1 second', interval '1 second') ts
       on conflict do nothing
       returning der_id, ts, power_kw)
     insert into pm.telemetry_1m as t (der_id, bucket, sum_kw, min_kw, max_kw, samples)
     select der_id, date_trunc('minute', ts), sum(power_kw), min(power_kw), max(power_kw), count(*) from ins group by 1, 2
     on conflict (der_id, bucket) do update set sum_kw = t.sum_kw + excluded.sum_kw, samples = t.samples + excluded.samples,
       min_kw = least(t.min_kw, excluded.min_kw), max_kw = greatest(t.max_kw, excluded.max_kw)" >/dev/null
sql "analyze pm.telemetry_1m" >/dev/null
client=$(python3 -c "import json; c=json.load(open('$dir/credentials.json'))['clients'][0]; print(c['client_id'], c['client_secret'])")
token=$(curl -fsS "$api/oauth/token" -d grant_type=client_credentials -d client_id="${client% *}" -d client_secret="${client#* }" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
to=$(date -u +%Y-%m-%dT%H:%M:%SZ); from=$(date -u -d '7 days ago' +%Y-%m-%dT%H:%M:%SZ)
url="$api/v1/ders/$der/telemetry?from=$from&to=$to&resolution=15m"
points=$(curl -fsS "$url" -H "authorization: Bearer $token" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["points"]))')
for _ in $(seq 1 200); do curl -fsS -o /dev/null -w '%{time_total}\n' "$url" -H "authorization: Bearer $token"; done \
  | sort -n > "$dir/read.txt"
read_p50=$(awk 'NR == 100 {printf "%.1f", $1 * 1000}' "$dir/read.txt")
read_p99=$(awk 'NR == 198 {printf "%.1f", $1 * 1000}' "$dir/read.txt")

cat <<EOF

telemetry pipeline: $GATEWAYS gateways, $DERS DERs, ${SECONDS_PER_STEP} s per step, $(nproc) cores, $(date -u +%F)
  offered  acked/s    acked     p50 delay p99 delay   lag    drain   lost   CPU seconds during the step
$(printf '%s\n' "${table[@]}")

plain COPY of $copy_rows rows into pm.telemetry: ${copy_secs} s = $copy_rate rows/s
pipeline at the last step / plain COPY: $(python3 -c "print(round($best / $copy_rate, 2))")
read API, week of 1 Hz at 15 min ($points points): p50 ${read_p50} ms, p99 ${read_p99} ms (200 sequential requests, curl)
EOF
if [ ${#stalled[@]} -gt 0 ]; then
  printf '\nFAILED: %s\n' "${stalled[@]}" >&2
  exit 1
fi
