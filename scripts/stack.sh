#!/usr/bin/env bash
# The development stack: `up [--profile P] [--native|--docker]`, `down`, `destroy`, `ps`.
#
# With a Docker engine it drives docker-compose.yml; without one it runs the embedded
# stack under .stack/: a private PostgreSQL cluster, tansu (Kafka protocol, SQLite
# storage) and s3s-fs (S3 over a folder), plus the services for profiles that want them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/env.sh

S="$PMCORE_STACK_DIR"
say() { printf '\033[1m[stack]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  cat >&2 <<'USAGE'
usage: scripts/stack.sh up [--profile all|dev|testing|audit|messaging] [--native|--docker]
       scripts/stack.sh sim    simulated gateways for the seeded fleet, in the background
       scripts/stack.sh logins the service logins (after migrating)
       scripts/stack.sh down | destroy | ps

profiles: all       infrastructure and every service
          dev       infrastructure only (run services with `just run <service>`)
          testing   Postgres, broker and S3 (what `just test` needs)
          audit     infrastructure and the audit-log service
          messaging infrastructure, an SMTP sink and the messaging service
USAGE
  exit 2
}

docker_up() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

mode_for() { # decide docker or native
  case "${1:-}" in
    --docker) docker_up || die "--docker given but no Docker engine answers"; echo docker ;;
    --native) echo native ;;
    *) if docker_up; then echo docker; else echo native; fi ;;
  esac
}

services_for() {
  case "$1" in
    all) echo "api worker scheduler bucket-watcher audit-log messaging der-gateway-relay" ;;
    audit) echo "audit-log" ;;
    messaging) echo "messaging" ;;
    dev|testing) echo "" ;;
    *) die "unknown profile '$1'" ;;
  esac
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # wait_port PORT NAME [SECONDS]: fails early when NAME's process died
  local deadline=$((SECONDS + ${3:-60}))
  until port_open "$1"; do
    if [ -f "$S/$2.pid" ] && ! pid_alive "$S/$2.pid"; then
      die "$2 exited during start-up: $(tail -n 5 "$S/$2.log" 2>/dev/null)"
    fi
    [ $SECONDS -lt $deadline ] || die "$2 did not open port $1 within ${3:-60} s; see $S/$2.log"
    sleep 0.2
  done
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# PostgreSQL ---------------------------------------------------------------------

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_pg() { # initdb refuses to run as root: run the cluster as the postgres user then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Only the testing profile trades durability for speed: the system people run
# (`./dev up`, the dev and all profiles) must not lose acknowledged writes on a
# power cut.
pg_durability() {
  if [ "${1:-all}" = testing ]; then echo "-c fsync=off -c synchronous_commit=off"; else echo ""; fi
}

# A client that vanished without closing (a silent network) is noticed in about two
# minutes, not the kernel's two hours: until then its backend keeps any advisory lock
# it held (the outbox relay's, the scheduler leader's). docs/operations.md.
PG_KEEPALIVES="-c tcp_keepalives_idle=60 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=6"

pg_up() {
  local profile="${1:-all}"
  local bin; bin="$(pg_bin)"; [ -n "$bin" ] || die "no PostgreSQL server; run scripts/install-tools.sh stack"
  local dir="$S/postgres"
  mkdir -p "$dir/run"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir"; chmod 755 "$S"; fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    say "initdb $dir/data"
    local pw="$dir/pwfile"; echo pmcore > "$pw"; [ "$(id -u)" = 0 ] && chown postgres: "$pw"
    as_pg "$bin/initdb" -D "$dir/data" -U pmcore --pwfile="$pw" --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || die "initdb failed: $(tail -n 5 "$dir/initdb.log")"
    rm -f "$pw"
  fi
  local want_fsync=on; [ "$profile" = testing ] && want_fsync=off
  if as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1 \
    && [ "$(psql_admin -tAc 'show fsync' 2>/dev/null)" != "$want_fsync" ]; then
    say "restarting postgres with fsync=$want_fsync for profile $profile"
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  fi
  if as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    say "postgres already running on $PMCORE_PG_PORT"
  else
    port_open "$PMCORE_PG_PORT" && die "port $PMCORE_PG_PORT is taken by something else; set PMCORE_PG_PORT"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $PMCORE_PG_PORT -k $dir/run -c listen_addresses=127.0.0.1 -c max_connections=300 $PG_KEEPALIVES $(pg_durability "$profile")" \
      start >/dev/null || die "postgres did not start: $(tail -n 5 "$dir/postgres.log")"
    say "postgres on 127.0.0.1:$PMCORE_PG_PORT"
  fi
  if ! psql_admin -tAc "select 1 from pg_database where datname = 'pmcore'" | grep -q 1; then
    psql_admin -qc "create database pmcore" && say "database pmcore created"
  fi
}

psql_admin() { PGPASSWORD=pmcore psql -h 127.0.0.1 -p "$PMCORE_PG_PORT" -U pmcore -d postgres -v ON_ERROR_STOP=1 "$@"; }

pg_down() {
  local bin; bin="$(pg_bin)"; [ -n "$bin" ] && [ -f "$S/postgres/data/PG_VERSION" ] || return 0
  if as_pg "$bin/pg_ctl" -D "$S/postgres/data" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$S/postgres/data" -m fast -w stop >/dev/null && say "postgres stopped"
  fi
}

# tansu and s3s-fs -------------------------------------------------------------------

start_bg() { # start_bg NAME PORT command...: a detached process with a pid file and a log
  local name=$1 port=$2; shift 2
  if pid_alive "$S/$name.pid"; then say "$name already running on $port"; return; fi
  port_open "$port" && die "port $port is taken by something else; set the PMCORE_*_PORT for $name"
  nohup setsid "$@" >"$S/$name.log" 2>&1 < /dev/null &
  echo $! >"$S/$name.pid"
  wait_port "$port" "$name"
  say "$name on 127.0.0.1:$port"
}

stop_bg() { # stop_bg NAME: SIGTERM, then SIGKILL after 10 s
  local pidfile="$S/$1.pid"
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  local pid; pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; say "$1 killed"; else say "$1 stopped"; fi
  rm -f "$pidfile"
}

kafka_up() {
  mkdir -p "$S/tansu"
  # tansu resolves a sqlite:// path against its working directory, absolute or not.
  start_bg tansu "$PMCORE_KAFKA_PORT" env -C "$S/tansu" tansu broker \
    --storage-engine "sqlite://tansu.db" \
    --listener-url "tcp://127.0.0.1:$PMCORE_KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PMCORE_KAFKA_PORT"
  # tansu 0.6's schema lacks the index its fetch path needs (docs/decisions/0012).
  python3 tools/broker/tansu_indexes.py "$S/tansu/tansu.db"
}

s3_up() {
  mkdir -p "$S/s3/pmcore-inbound" "$S/s3/pmcore-reports"
  start_bg s3s-fs "$PMCORE_S3_PORT" s3s-fs --host 127.0.0.1 --port "$PMCORE_S3_PORT" \
    --access-key "$PMCORE_S3_ACCESS_KEY" --secret-key "$PMCORE_S3_SECRET_KEY" "$S/s3"
}

# MailDev keeps what the services send and shows it at http://127.0.0.1:$PMCORE_MAIL_UI_PORT,
# as Mailpit does in docker-compose.yml.
smtp_up() {
  scripts/install-tools.sh mail
  start_bg smtp-sink "$PMCORE_SMTP_PORT" tools/mail/node_modules/.bin/maildev \
    --ip 127.0.0.1 --smtp "$PMCORE_SMTP_PORT" --web-ip 127.0.0.1 --web "$PMCORE_MAIL_UI_PORT" \
    --max-emails 1000 --mail-directory "$S/mail"
  say "emails: http://127.0.0.1:$PMCORE_MAIL_UI_PORT"
}

# Services -------------------------------------------------------------------------

service_port() {
  case "$1" in
    api) echo 3001 ;; audit-log) echo 3003 ;; messaging) echo 3004 ;; der-gateway-relay) echo 3005 ;;
    worker) echo 3010 ;; scheduler) echo 3011 ;; bucket-watcher) echo 3012 ;;
  esac
}

# Where /healthz, /readyz and /metrics answer: the services with a public port keep
# them on a loopback port of their own (their defaults, PMCORE_*_OPS_LISTEN).
ops_port() {
  case "$1" in
    api) echo 9101 ;; audit-log) echo 9103 ;; messaging) echo 9104 ;; der-gateway-relay) echo 9105 ;;
    *) service_port "$1" ;;
  esac
}

# The system people run is built optimized: a debug relay alone took 40 % of a core
# with the demo fleet (issue 16). PMCORE_BUILD=debug builds faster; `just run
# <service>` stays a debug build for development.
BUILD="$PMCORE_BUILD"
build_bins() { # build_bins [cargo args...]: the workspace's binaries in $BUILD
  if [ "$BUILD" = release ]; then cargo build --quiet --release "$@"; else cargo build --quiet "$@"; fi
}

services_up() {
  [ -n "$*" ] || return 0
  say "building services ($BUILD)"
  build_bins --bins
  PMCORE_LOG_FORMAT="${PMCORE_LOG_FORMAT:-text}" "target/$BUILD/api" migrate
  # The audit service's own set (flyway/audit/), after the platform's.
  PMCORE_LOG_FORMAT="${PMCORE_LOG_FORMAT:-text}" "target/$BUILD/audit-log" migrate
  db_logins
  for svc in "$@"; do
    # Each with its own login: only its role's privileges. The rest is for tansu,
    # which runs SQL for every partition an idle consumer polls, several times per
    # fetch wait, records or not (issue 16; docs/benchmarks.md): one partition per
    # topic (one instance of each service runs here), and fetch waits of 2 s for
    # commands, acknowledgements and telemetry, 10 s for the rest (audit trail,
    # notifications, eligibility, settlement, imports, secret rotations). On tansu a
    # record waits up to about three quarters of its consumer's wait; on Apache Kafka
    # the waits cost no latency (a fetch returns as soon as records arrive).
    start_bg "$svc" "$(service_port "$svc")" \
      env PMCORE_DATABASE_URL="$(service_database_url "$svc")" \
      PMCORE_KAFKA_PARTITIONS="${PMCORE_KAFKA_PARTITIONS:-1}" \
      PMCORE_KAFKA_FETCH_WAIT_MS="${PMCORE_KAFKA_FETCH_WAIT_MS:-2000}" \
      PMCORE_KAFKA_BACKGROUND_FETCH_WAIT_MS="${PMCORE_KAFKA_BACKGROUND_FETCH_WAIT_MS:-10000}" \
      "target/$BUILD/$svc"
  done
}

db_logins() { # one login per service, member of its role (after the migrations)
  { echo "select set_config('pmcore.app_password', :'pw', false);"; cat flyway/logins/service-logins.sql; } \
    | psql_admin -q -d pmcore -v pw="$PMCORE_APP_DB_PASSWORD" >/dev/null
}

# Commands ---------------------------------------------------------------------------

cmd_up() {
  local profile=all mode_flag=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --profile) profile="${2:-}"; shift 2 ;;
      --profile=*) profile="${1#*=}"; shift ;;
      --native|--docker) mode_flag=$1; shift ;;
      *) usage ;;
    esac
  done
  local services; services="$(services_for "$profile")"
  if [ "$(mode_for "$mode_flag")" = docker ]; then
    say "docker compose -p pmcore --profile $profile up"
    docker compose -p pmcore --profile "$profile" up -d --wait
    return
  fi
  mkdir -p "$S"
  scripts/install-tools.sh stack
  echo "$profile" > "$S/profile"
  pg_up "$profile"
  kafka_up
  s3_up
  if [ "$profile" = messaging ] || [ "$profile" = all ]; then smtp_up; fi
  # shellcheck disable=SC2086
  services_up $services
  say "stack up (profile $profile); 'just stack-ps' shows it, 'just stack-down' stops it"
}

# The seeded fleet's simulated gateways, live, in the background (no port of their own).
cmd_sim() {
  if pid_alive "$S/gateway-sim.pid"; then say "gateway-sim already running"; return; fi
  build_bins --bin gateway-sim
  nohup setsid "target/$BUILD/gateway-sim" run --report-every-s 60 >"$S/gateway-sim.log" 2>&1 < /dev/null &
  echo $! >"$S/gateway-sim.pid"
  sleep 3
  pid_alive "$S/gateway-sim.pid" || { tail -n 20 "$S/gateway-sim.log" >&2; die "gateway-sim exited; see $S/gateway-sim.log"; }
  say "gateway-sim streaming the seeded fleet (log: $S/gateway-sim.log)"
}

cmd_down() {
  if docker_up && [ -n "$(docker compose -p pmcore ps -q 2>/dev/null)" ]; then docker compose -p pmcore --profile all down; fi
  for svc in gateway-sim der-gateway-relay messaging audit-log bucket-watcher scheduler worker api smtp-sink s3s-fs tansu; do
    stop_bg "$svc"
  done
  pg_down
}

cmd_destroy() {
  cmd_down
  if docker_up; then docker compose -p pmcore --profile all down -v; fi
  rm -rf "$S" && say "removed $S"
  # The simulator's gateway secrets and the seeded clients belong to the database
  # just removed.
  rm -f seed/out/gateways.json seed/out/credentials.json
}

row() { printf '%-18s %-24s %-8s %s\n' "$@"; }

cmd_ps() {
  row PART ADDRESS PID STATUS
  local bin; bin="$(pg_bin)"
  local pg_status=down
  [ -n "$bin" ] && "$bin/pg_isready" -q -h 127.0.0.1 -p "$PMCORE_PG_PORT" && pg_status=healthy
  row postgres "127.0.0.1:$PMCORE_PG_PORT" "$(head -n 1 "$S/postgres/data/postmaster.pid" 2>/dev/null || echo -)" "$pg_status"
  local part port
  for part in tansu:$PMCORE_KAFKA_PORT s3s-fs:$PMCORE_S3_PORT smtp-sink:$PMCORE_SMTP_PORT; do
    port=${part#*:}; part=${part%%:*}
    local pid=- status=down
    pid_alive "$S/$part.pid" && pid="$(cat "$S/$part.pid")"
    if port_open "$port"; then status=healthy; elif [ "$pid" != - ]; then status=unhealthy; fi
    [ "$part" = smtp-sink ] && [ "$pid" = - ] && [ "$status" = down ] && status="not started"
    row "$part" "127.0.0.1:$port" "$pid" "$status"
  done
  local svc
  for svc in api worker scheduler bucket-watcher audit-log messaging der-gateway-relay; do
    port="$(service_port "$svc")"
    local pid=- status="not started"
    pid_alive "$S/$svc.pid" && pid="$(cat "$S/$svc.pid")" && status=unhealthy
    if [ "$pid" != - ] && curl -fsS -o /dev/null "http://127.0.0.1:$(ops_port "$svc")/readyz"; then status=healthy; fi
    row "$svc" "127.0.0.1:$port" "$pid" "$status"
  done
  local sim_status="not started" sim_pid=-
  pid_alive "$S/gateway-sim.pid" && sim_pid="$(cat "$S/gateway-sim.pid")" && sim_status=running
  row gateway-sim "-> 127.0.0.1:3005" "$sim_pid" "$sim_status"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  destroy) cmd_destroy ;;
  ps) cmd_ps ;;
  sim) cmd_sim ;;
  logins) db_logins ;;
  *) usage ;;
esac
