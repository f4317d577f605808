#!/usr/bin/env bash
# `just bench-api`: a release build of the api against its own database on the running
# stack, loaded with wrk (Debian) on this machine: get-by-id, list with a filter, and
# create; then the same list with 100,000 and 1,000,000 DERs in the warehouse.
# Prints wrk's own report per case and a summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

DURATION="${PMCORE_BENCH_SECONDS:-15}"
CONNECTIONS="${PMCORE_BENCH_CONNECTIONS:-32}"
command -v wrk >/dev/null || { say "installing wrk (Debian)"; apt-get install -y -qq wrk >/dev/null; }

say "building the api (release)"
cargo build --release --quiet --bin api

db="pmcore_bench"
admin_url="${PMCORE_DATABASE_URL%/*}/postgres"
db_url="${PMCORE_DATABASE_URL%/*}/$db"
psql -q "$admin_url" -c "drop database if exists $db with (force)" -c "create database $db"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port) ops=$(free_port)
base="http://127.0.0.1:$port"
PMCORE_DATABASE_URL="$db_url" PMCORE_MIGRATE_ON_START=true PMCORE_API_LISTEN="127.0.0.1:$port" PMCORE_API_OPS_LISTEN="127.0.0.1:$ops" \
  PMCORE_KAFKA_TOPIC_PREFIX="bench." PMCORE_DATABASE_MAX_CONNECTIONS=32 \
  PMCORE_API_RATE_LIMIT_PER_SECOND=1000000 PMCORE_API_RATE_LIMIT_BURST=1000000 PMCORE_LOG=warn \
  target/release/api >"$PMCORE_STACK_DIR/bench-api.log" 2>&1 &
api=$!
trap 'kill $api 2>/dev/null; wait $api 2>/dev/null || true' EXIT
until curl -fsS -o /dev/null "http://127.0.0.1:$ops/readyz" 2>/dev/null; do sleep 0.2; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
token_for() { curl -fsS "$base/oauth/token" -d grant_type=client_credentials -d client_id="$1" -d client_secret="$2" | json "['access_token']"; }
admin=""
until [ -n "$admin" ]; do admin=$(token_for "$PMCORE_BOOTSTRAP_CLIENT_ID" "$PMCORE_BOOTSTRAP_CLIENT_SECRET" 2>/dev/null || true); sleep 0.2; done
org=$(curl -fsS "$base/v1/organizations" -H "authorization: Bearer $admin" -H 'content-type: application/json' \
  -d '{"name":"Bench Aggregation","kind":"aggregator"}' | json "['id']")
client=$(curl -fsS "$base/v1/organizations/$org/clients" -H "authorization: Bearer $admin" -H 'content-type: application/json' \
  -d '{"name":"bench","roles":["aggregator"]}')
token=$(token_for "$(echo "$client" | json "['id']")" "$(echo "$client" | json "['client_secret']")")

fill() { # fill N: the aggregator owns N DERs on 20 feeders
  local n=$1
  psql -q "$db_url" <<SQL
insert into pm.der (id, organization_id, der_type, nameplate_kw, feeder, substation, created_at, updated_at)
select (lpad(to_hex((extract(epoch from now()) * 1000)::bigint), 12, '0') || '7' || substr(md5(g::text), 1, 3)
        || '8' || substr(md5(g::text), 4, 15))::uuid,
       '$org', (array['battery','thermostat','ev_charger','solar_pv','water_heater','ci_load'])[1 + g % 6],
       5, 'F-' || lpad((g % 20)::text, 2, '0'), 'S-' || (g % 20 / 5), now(), now()
  from generate_series((select count(*) from pm.der) + 1, $n) g;
analyze pm.der;
SQL
}

declare -a rows
run() { # run NAME URL [wrk args...]
  local name=$1 url=$2; shift 2
  say "$name: wrk -c$CONNECTIONS -d${DURATION}s $url"
  local out; out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "authorization: Bearer $token" "$@" "$url")
  echo "$out"
  local rps p50 p99 errors
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx/ {print $NF}'); errors=${errors:-0}
  rows+=("$(printf '%-34s %10s %10s %10s %8s' "$name" "$rps" "$p50" "$p99" "$errors")")
}

fill 1000
one=$(curl -fsS "$base/v1/ders?limit=1" -H "authorization: Bearer $token" | json "['items'][0]['id']")
run "get DER by id (1k DERs)" "$base/v1/ders/$one"
run "list feeder+type, 50 (1k DERs)" "$base/v1/ders?feeder=F-07&der_type=thermostat&limit=50"
run "list feeder+type, none match (1k)" "$base/v1/ders?feeder=F-07&der_type=battery&limit=50"
run "create DER" "$base/v1/ders" -s bench/create-der.lua
for n in 100000 1000000; do
  say "filling the warehouse to $n DERs"
  fill "$n"
  run "list feeder+type, 50 ($((n / 1000))k DERs)" "$base/v1/ders?feeder=F-07&der_type=thermostat&limit=50"
  run "list feeder+type, none match ($((n / 1000))k)" "$base/v1/ders?feeder=F-07&der_type=battery&limit=50"
  run "get DER by id ($((n / 1000))k DERs)" "$base/v1/ders/$one"
done

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; wrk and the api share it; ${CONNECTIONS} connections, ${DURATION} s per case"
printf '%-34s %10s %10s %10s %8s\n' case "req/s" p50 p99 non-2xx
printf '%s\n' "${rows[@]}"
[ -n "${PMCORE_BENCH_KEEP:-}" ] || psql -q "$admin_url" -c "drop database if exists $db with (force)"
