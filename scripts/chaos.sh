#!/usr/bin/env bash
# `just chaos`: the fault suite (tools/chaos/chaos.py) against the running stack, with
# release builds of pmcore's binaries (PMCORE_BUILD=debug for the faster-built ones).
# Arguments go to chaos.py: --short for the form ./dev test runs, --only NAME... .
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
say() { printf '\033[1m[chaos]\033[0m %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for part in "postgres:$PMCORE_PG_PORT" "kafka:$PMCORE_KAFKA_PORT" "s3:$PMCORE_S3_PORT"; do
  port_open "${part#*:}" || { say "${part%%:*} does not answer on ${part#*:}: run 'just stack-up --profile testing' first"; exit 1; }
done
scripts/install-tools.sh subscriber
say "building pmcore's binaries ($PMCORE_BUILD)"
# shellcheck disable=SC2086
cargo build $PMCORE_RUN_FLAGS --quiet --bin api --bin worker --bin der-gateway-relay --bin audit-log --bin messaging \
  --bin bucket-watcher --bin scheduler --bin seed --bin gateway-sim
PYTHONPATH="$PMCORE_STACK_DIR/pylib" exec python3 -u tools/chaos/chaos.py --build "$PMCORE_BUILD" "$@"
