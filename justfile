# pmcore task list. `just` lists the recipes; README.md explains the workflow.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

export PATH := env_var('HOME') + "/.cargo/bin:" + env_var('PATH')

# List the recipes.
default:
    @just --list --unsorted

# ---- quick start -------------------------------------------------------------------

# Bring up the whole system (every service) with seed data and live simulated gateways.
up: (stack-up "--profile" "all") seed-database seed-kafka simulate-start
    @scripts/stack.sh ps

# Seed the database with the demo's organizations and programs (idempotent).
seed-database:
    source scripts/env.sh && cargo run --quiet $PMCORE_RUN_FLAGS --bin seed

# Publish the current programs (--pm), DERs (--der-warehouse) and gateways (--der-gateway)
# as events for late subscribers, then (with --der-gateway) telemetry history through the
# relay: `just seed-kafka --pm --days 7`. No application flag = all. Idempotent.
seed-kafka *args:
    #!/usr/bin/env bash
    set -euo pipefail
    source scripts/env.sh
    apps=(); days=14
    while [ $# -gt 0 ]; do
      case "$1" in
        --pm|--der-warehouse|--der-gateway) apps+=("$1") ;;
        --days) days="${2:?--days needs a number}"; shift ;;
        --days=*) days="${1#*=}" ;;
        [0-9]*) days="$1" ;; # the old positional form: just seed-kafka 7
        *) echo "seed-kafka: unknown argument $1 (--pm, --der-warehouse, --der-gateway, --days N)" >&2; exit 2 ;;
      esac
      shift
    done
    [ ${#apps[@]} -gt 0 ] || apps=(--pm --der-warehouse --der-gateway)
    cargo run --quiet $PMCORE_RUN_FLAGS --bin seed-kafka -- "${apps[@]}"
    [[ " ${apps[*]} " == *" --der-gateway "* ]] || exit 0
    # Without psql (a Docker-only machine) the backfill just runs again; the
    # (der_id, ts) key makes a second run add nothing.
    if command -v psql >/dev/null; then
      have=$(psql -Atq "$PMCORE_DATABASE_URL" -c "select count(*) from pm.telemetry where ts < now() - interval '$days days' + interval '1 day'")
      if [ "$have" -gt 0 ]; then echo "seed-kafka: history already there ($have old readings); skipping"; exit 0; fi
    fi
    cargo run --quiet $PMCORE_RUN_FLAGS --bin gateway-sim -- backfill --days "$days"

# Start the simulated gateways in the background (stopped by stack-down).
simulate-start:
    scripts/stack.sh sim

# Run simulated gateways in the foreground: `just simulate --gateways 5 --duration-s 60`.
simulate *args:
    source scripts/env.sh && cargo run --quiet $PMCORE_RUN_FLAGS --bin gateway-sim -- run "$@"

# ---- stack -------------------------------------------------------------------------

# Start the stack: --profile all|dev|testing|audit|messaging, --native or --docker.
stack-up *args:
    scripts/stack.sh up "$@"

# Stop the stack (data stays in .stack/ or the Docker volumes).
stack-down:
    scripts/stack.sh down

# Stop the stack and remove its data.
stack-destroy:
    scripts/stack.sh destroy

# Show each part of the stack, its address and whether it answers.
stack-ps:
    scripts/stack.sh ps

# ---- database ----------------------------------------------------------------------

# Create the pmcore database (the stack does this on first start).
db-create:
    source scripts/env.sh && PGPASSWORD=pmcore psql -h 127.0.0.1 -p "$PMCORE_PG_PORT" -U pmcore -d postgres -tAc "select 1 from pg_database where datname = 'pmcore'" | grep -q 1 \
      || PGPASSWORD=pmcore psql -h 127.0.0.1 -p "$PMCORE_PG_PORT" -U pmcore -d postgres -c "create database pmcore"

# Drop the pmcore database and the per-test databases.
db-drop:
    source scripts/env.sh && for db in $(PGPASSWORD=pmcore psql -h 127.0.0.1 -p "$PMCORE_PG_PORT" -U pmcore -d postgres -tAc "select datname from pg_database where datname = 'pmcore' or datname like 'pmcore_t_%'"); do \
      PGPASSWORD=pmcore psql -h 127.0.0.1 -p "$PMCORE_PG_PORT" -U pmcore -d postgres -qc "drop database \"$db\" with (force)"; echo "dropped $db"; done

# Apply pending migrations (flyway/pm/, flyway/audit/) and create the service logins.
db-migrate:
    source scripts/env.sh && cargo run --quiet --bin api -- --log-format text migrate
    source scripts/env.sh && cargo run --quiet --bin audit-log -- --log-format text migrate
    scripts/stack.sh logins

# ---- contracts ---------------------------------------------------------------------

# Write the AsyncAPI document as json or html to asyncapi/dist/.
gen-asyncapi-spec format="html":
    scripts/install-tools.sh node
    node tools/node/asyncapi.mjs {{format}}

# Write the audit API's OpenAPI document (generated from the code) to services/audit-log/openapi.json.
gen-audit-spec:
    cargo run --quiet --bin audit-tool -- openapi > services/audit-log/openapi.json
    @echo "wrote services/audit-log/openapi.json"

# Write the messaging API's OpenAPI document (generated from the code).
gen-messaging-spec:
    cargo run --quiet --bin messaging-tool -- openapi > services/messaging/openapi.json
    @echo "wrote services/messaging/openapi.json"

# Write the api's OpenAPI document (generated from the code) to services/api/openapi.json or .yaml.
gen-api-spec format="json":
    cargo run --quiet --bin api-openapi -- {{format}} > services/api/openapi.{{format}}
    @echo "wrote services/api/openapi.{{format}}"

# Validate asyncapi/asyncapi.yaml with the AsyncAPI parser.
validate-asyncapi:
    scripts/install-tools.sh node
    node tools/node/asyncapi.mjs validate

# ---- quality -----------------------------------------------------------------------

# Formatting and clippy, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --quiet -- -D warnings

# Type-check every crate and target.
type-check:
    cargo check --workspace --all-targets --quiet

# Run the whole test suite against the running stack (`just stack-up --profile testing`).
test *args:
    scripts/test.sh "$@"

# The fault suite on release builds: broker restarts, kills, cut dependencies, poison, reconnects, authorization.
chaos *args:
    scripts/chaos.sh "$@"

# Line coverage of the whole suite against the running stack (installs cargo-llvm-cov on first use).
coverage:
    scripts/coverage.sh

# ---- benchmarks (docs/benchmarks.md records the numbers) -------------------------

# Every benchmark.
bench: bench-api bench-telemetry bench-dispatch bench-settlement bench-import bench-audit bench-messaging

# The REST api under wrk: reads and writes with 1k to 1M DERs.
bench-api:
    scripts/bench-api.sh

# What the running system costs per process: at rest, then with the demo fleet streaming.
bench-idle:
    scripts/bench-idle.sh

# The telemetry pipeline at rising load, a plain COPY of the same rows, and the read API.
bench-telemetry:
    scripts/bench-telemetry.sh

# One dispatch event over 10,000 simulated DERs: start to commands stored, delivered, applied.
bench-dispatch:
    scripts/bench-dispatch.sh

# Settling one event of 200 to 2,000 DERs with 45 days of 5-minute history, against a plain scan.
bench-settlement:
    scripts/bench-settlement.sh

# A 100k- and a 1M-row meter-data file from the inbound bucket into Postgres, against COPY.
bench-import:
    scripts/bench-import.sh

# 1M domain events from the topics into the audit log; size per entry; proof latency.
bench-audit:
    source scripts/env.sh && cargo run --release --quiet -p pmcore-audit-log --example bench

# Messaging: 100,000 webhook deliveries to 100 endpoints (10 down), then a steady rate.
bench-messaging:
    cargo build --release --quiet --bin messaging
    source scripts/env.sh && cargo run --release --quiet -p pmcore-messaging --example bench

# ---- run ---------------------------------------------------------------------------

# Run one service from source against the stack, e.g. `just run api`.
run service *args:
    source scripts/env.sh && PMCORE_DATABASE_URL="$(service_database_url {{service}})" PMCORE_LOG_FORMAT="${PMCORE_LOG_FORMAT:-text}" cargo run --bin {{service}} -- "${@:2}"
