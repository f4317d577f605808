#!/usr/bin/env bash
# `just bench-idle`: what the running embedded stack costs, per process, in one run:
#   (a) at rest: every service up, the simulated fleet stopped, nothing flowing;
#   (b) the demo fleet: the seeded gateways streaming one reading per DER per second.
# For each, over PMCORE_BENCH_SECONDS (60): CPU as a share of one core (from
# /proc/<pid>/stat, user + system) and resident memory (VmRSS at the end, and the
# peak VmHWM; Postgres's proportional set size, since its backends share memory), for the broker, Postgres (all its processes), the S3 server, the SMTP
# sink, every service and the simulator.
#
# Needs the whole system on the embedded stack: `./dev up` (or `just stack-up
# --profile all` and `just seed`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

SECONDS_PER_STATE="${PMCORE_BENCH_SECONDS:-60}"
S="$PMCORE_STACK_DIR"
tick=$(getconf CLK_TCK)
parts=(tansu s3s-fs smtp-sink api worker scheduler bucket-watcher audit-log messaging der-gateway-relay gateway-sim)

alive() { [ -f "$S/$1.pid" ] && kill -0 "$(cat "$S/$1.pid")" 2>/dev/null; }
for svc in api der-gateway-relay worker; do
  alive "$svc" || { say "$svc is not running: start the whole system first (./dev up)"; exit 2; }
done

pids_of() { # the process (and its children) behind a pid file; Postgres: every backend
  if [ "$1" = postgres ]; then pgrep -u postgres postgres | tr '\n' ' '; return; fi
  alive "$1" || return 0
  local pid; pid=$(cat "$S/$1.pid")
  echo "$pid $(pgrep -P "$pid" | tr '\n' ' ')"
}
ticks() { # summed user+system ticks of the pids given, with those of children they
  # reaped (cutime, cstime): Postgres's backends come and go, and one that exits
  # during the window lands in the postmaster's count instead of vanishing from ours
  local sum=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    sum=$((sum + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13 + $14 + $15}')))
  done
  echo "$sum"
}
mem() { # mem PART pids...: summed VmRSS and VmHWM in MB; for Postgres the proportional
  # set size (its backends share the buffer pool, which RSS would count once each)
  local part=$1 rss=0 hwm=0 p; shift
  for p in "$@"; do
    [ -r "/proc/$p/status" ] || continue
    if [ "$part" = postgres ]; then
      rss=$((rss + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
    else
      rss=$((rss + $(awk '/VmRSS/ {print $2}' "/proc/$p/status")))
      hwm=$((hwm + $(awk '/VmHWM/ {print $2}' "/proc/$p/status")))
    fi
  done
  echo "$((rss / 1024)) $((hwm / 1024))"
}

# measure LABEL: one sampling window; prints "part cpu% rss hwm" lines into $out/LABEL
measure() {
  local label=$1 part
  declare -A before pids
  for part in postgres "${parts[@]}"; do
    pids[$part]="$(pids_of "$part")"
    # shellcheck disable=SC2086
    before[$part]=$(ticks ${pids[$part]})
  done
  sleep "$SECONDS_PER_STATE"
  for part in postgres "${parts[@]}"; do
    [ -n "${pids[$part]// /}" ] || continue
    # shellcheck disable=SC2086
    local after; after=$(ticks ${pids[$part]})
    # shellcheck disable=SC2086
    read -r rss hwm < <(mem "$part" ${pids[$part]})
    python3 -c "print('$part', round(100 * ($after - ${before[$part]}) / $tick / $SECONDS_PER_STATE, 1), $rss, $hwm)"
  done >"$out/$label"
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sim_was_running=0
if alive gateway-sim; then
  sim_was_running=1
  say "stopping the simulated fleet for the at-rest window"
  kill "$(cat "$S/gateway-sim.pid")"; rm -f "$S/gateway-sim.pid"
fi
say "at rest: settling 15 s, then measuring ${SECONDS_PER_STATE} s"
sleep 15
measure rest
say "the demo fleet: starting the simulated gateways, warming up 30 s, then measuring ${SECONDS_PER_STATE} s"
scripts/stack.sh sim
sleep 30
# Readings the relay received from the window's start on (a fixed start: a sliding
# "last hour" lost as many old rows as the fleet added once it had streamed an hour).
window_start=$(psql -Atq "$PMCORE_DATABASE_URL" -c "select now()")
readings_before=0
measure demo
readings_after=$(psql -Atq "$PMCORE_DATABASE_URL" \
  -c "select count(*) from pm.telemetry where received_at >= '$window_start'")
if [ $sim_was_running = 0 ]; then kill "$(cat "$S/gateway-sim.pid")"; rm -f "$S/gateway-sim.pid"; fi

python3 - "$out/rest" "$out/demo" "$readings_before" "$readings_after" "$SECONDS_PER_STATE" <<'PY'
import sys
def read(path):
    rows = {}
    for line in open(path):
        part, cpu, rss, hwm = line.split()
        rows[part] = (float(cpu), int(rss), int(hwm))
    return rows
rest, demo = read(sys.argv[1]), read(sys.argv[2])
rate = (int(sys.argv[4]) - int(sys.argv[3])) / float(sys.argv[5])
print(f"\nthe embedded stack, {sys.argv[5]} s per state; CPU as % of one core, memory in MB (resident now / peak; Postgres: proportional set size)")
print(f"{'process':<20} {'rest CPU':>9} {'rest RSS':>9} {'demo CPU':>9} {'demo RSS':>9} {'peak':>6}")
totals = [0.0, 0, 0.0, 0]
order = [p for p in ["tansu", "postgres", "s3s-fs", "smtp-sink", "api", "worker", "scheduler",
                     "bucket-watcher", "audit-log", "messaging", "der-gateway-relay", "gateway-sim"]
         if p in rest or p in demo]
for part in order:
    r = rest.get(part, (0.0, 0, 0)); d = demo.get(part, (0.0, 0, 0))
    print(f"{part:<20} {r[0]:>8.1f}% {r[1]:>9} {d[0]:>8.1f}% {d[1]:>9} {max(r[2], d[2]):>6}")
    if part != "gateway-sim":
        totals = [totals[0] + r[0], totals[1] + r[1], totals[2] + d[0], totals[3] + d[1]]
print(f"{'stack (no simulator)':<20} {totals[0]:>8.1f}% {totals[1]:>9} {totals[2]:>8.1f}% {totals[3]:>9}")
print(f"readings stored during the demo window: {rate:.0f}/s")
PY
