#!/usr/bin/env bash
# `just bench-import`: meter-data files end to end (object written to the inbound
# bucket → rows in Postgres) against a plain COPY of the same rows.
#
# A release worker and bucket watcher run against their own database and buckets on
# the running stack (`just stack-up --profile testing`). For each size a CSV of
# 15-minute readings for 1,000 DERs is generated (not timed) and written to the
# inbound bucket with curl's SigV4 signing, as an operator's S3 client would. Timed:
# from the start of the PUT until the file is `imported` (the watcher's poll, the
# worker's streamed read, checks and inserts, its commit). Then the same file is
# loaded with `\copy` into a table of the same shape with the same primary key, and
# the ratio of the two rates is reported, with the worker's peak memory (VmHWM) after
# each size: sizes run in ascending order, so a flat peak means memory does not grow
# with the file.
#
# PMCORE_BENCH_SIZES   rows per file, ascending (default "100000 1000000")
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

SIZES="${PMCORE_BENCH_SIZES:-100000 1000000}"
DERS=1000

say "building the worker and the bucket watcher (release)"
cargo build --release --quiet --bin worker --bin bucket-watcher

dir="$PMCORE_STACK_DIR/bench-import"
rm -rf "$dir" && mkdir -p "$dir"
db="pmcore_bench_import"
admin_url="${PMCORE_DATABASE_URL%/*}/postgres"
db_url="${PMCORE_DATABASE_URL%/*}/$db"
psql -q "$admin_url" -c "drop database if exists $db with (force)" -c "create database $db"
env PMCORE_DATABASE_URL="$db_url" PMCORE_LOG=warn target/release/worker migrate >/dev/null
sql() { psql -qAtX -v ON_ERROR_STOP=1 "$db_url" "$@"; }
org=00000000-0000-7000-8000-000000000001
sql <<SQL
insert into pm.organization (id, name, kind) values ('$org', 'Bench aggregator', 'aggregator');
insert into pm.der (id, organization_id, external_id, der_type, nameplate_kw)
  select gen_random_uuid(), '$org', 'm-' || lpad(n::text, 5, '0'), 'thermostat', 5
    from generate_series(1, $DERS) n;
create table bench_copy (
    der_external_id text not null, interval_start timestamptz not null,
    interval_minutes integer not null, kwh double precision not null,
    primary key (der_external_id, interval_start));
SQL

stamp=$(date +%s)
inbound="bench-in-$stamp"
reports="bench-rp-$stamp"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
common=(PMCORE_DATABASE_URL="$db_url" PMCORE_KAFKA_TOPIC_PREFIX="benchi$stamp." PMCORE_LOG=info
        PMCORE_LOG_FORMAT=text PMCORE_S3_INBOUND_BUCKET="$inbound" PMCORE_S3_REPORTS_BUCKET="$reports")
worker_port=$(free_port)
env "${common[@]}" PMCORE_WORKER_LISTEN="127.0.0.1:$worker_port" PMCORE_WORKER_IMPORT_MAX_BYTES=$((1024 * 1024 * 1024)) \
  target/release/worker >"$dir/worker.log" 2>&1 &
worker=$!
watcher_port=$(free_port)
env "${common[@]}" PMCORE_BUCKET_WATCHER_LISTEN="127.0.0.1:$watcher_port" PMCORE_BUCKET_WATCHER_POLL_MS=200 \
  target/release/bucket-watcher >"$dir/watcher.log" 2>&1 &
watcher=$!
trap 'kill $worker $watcher 2>/dev/null; wait 2>/dev/null || true' EXIT
# Ready means the buckets exist (the worker creates them).
until curl -fsS -o /dev/null "http://127.0.0.1:$worker_port/readyz" 2>/dev/null; do sleep 0.3; done
until curl -fsS -o /dev/null "http://127.0.0.1:$watcher_port/readyz" 2>/dev/null; do sleep 0.3; done
say "worker and watcher ready; worker RSS $(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$worker/status") MB"

printf '\n%9s %9s %11s %11s %10s %10s %10s %14s\n' rows MB import_s rows/s copy_s copy_rows/s ratio "worker peak MB" | tee "$dir/results.txt"
for n in $SIZES; do
  file="$dir/meter-$n.csv"
  python3 - "$n" "$DERS" >"$file" <<'PY'
import sys, datetime as d
n, ders = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
out.write("der_external_id,interval_start,interval_minutes,kwh\n")
start = d.datetime(2025, 1, 1, tzinfo=d.timezone.utc)
per = -(-n // ders)
written = 0
for q in range(per):
    t = (start + d.timedelta(minutes=15 * q)).isoformat()
    for m in range(1, ders + 1):
        if written == n:
            break
        out.write(f"m-{m:05d},{t},15,{0.2 + (m * 7 + q) % 50 / 100:.3f}\n")
        written += 1
PY
  mb=$(python3 -c "import os; print(round(os.path.getsize('$file') / 1e6, 1))")
  sql -c "truncate pm.meter_interval"
  key="$org/meter_data/bench-$n.csv"
  t0=$(date +%s.%N)
  curl -fsS -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --aws-sigv4 "aws:amz:${PMCORE_S3_REGION:-us-east-1}:s3" --user "$PMCORE_S3_ACCESS_KEY:$PMCORE_S3_SECRET_KEY" \
    --upload-file "$file" "$PMCORE_S3_ENDPOINT/$inbound/$key"
  while :; do
    status=$(sql -c "select status from pm.file where object_key = '$key'")
    case "$status" in
      imported) break ;;
      rejected) say "rejected: $(sql -c "select reason from pm.file where object_key = '$key'")"; exit 1 ;;
    esac
    sleep 0.1
  done
  t1=$(date +%s.%N)
  stored=$(sql -c "select count(*) from pm.meter_interval")
  [ "$stored" = "$n" ] || { say "expected $n rows, found $stored"; exit 1; }
  peak=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$worker/status")
  sql -c "truncate bench_copy"
  c0=$(date +%s.%N)
  sql -c "\\copy bench_copy from '$file' with (format csv, header)"
  c1=$(date +%s.%N)
  python3 - "$n" "$mb" "$t0" "$t1" "$c0" "$c1" "$peak" <<'PY' | tee -a "$dir/results.txt"
import sys
n, mb, t0, t1, c0, c1, peak = sys.argv[1:]
n = int(n); imp = float(t1) - float(t0); cp = float(c1) - float(c0)
print(f"{n:9d} {mb:>9} {imp:11.2f} {n / imp:11.0f} {cp:10.2f} {n / cp:10.0f} {cp / imp:10.2f} {peak:>14}")
PY
done
say "worker log: $(sed 's/\x1b\[[0-9;]*m//g' "$dir/worker.log" | grep 'file import finished' | tail -1)"
say "results in $dir/results.txt; $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; ratio = import rate / COPY rate"
