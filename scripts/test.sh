#!/usr/bin/env bash
# The full test suite against the running stack: lint, contract validators, and every
# Rust test (unit and integration) in parallel. Extra arguments go to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export PATH="$HOME/.cargo/bin:$PATH"
say() { printf '\033[1m[test]\033[0m %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for part in "postgres:$PMCORE_PG_PORT" "kafka:$PMCORE_KAFKA_PORT" "s3:$PMCORE_S3_PORT"; do
  port_open "${part#*:}" || { say "${part%%:*} does not answer on ${part#*:}: run 'just stack-up --profile testing' first"; exit 1; }
done

say "formatting and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "contracts: AsyncAPI document and docker-compose.yml"
scripts/install-tools.sh node
node tools/node/asyncapi.mjs validate
node tools/node/compose.mjs

say "building the service binaries (the integration tests start them)"
cargo build --bins --quiet

say "every recipe of the README's task table (run, or dry-run for the long ones)"
scripts/recipes-check.py

fuzz_since_ms=$(date +%s%3N)
say "api contract: schemathesis against a running api"
scripts/api-fuzz.sh

say "rust tests"
status=0
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi

# Every record the tests (and the fuzz run before them) wrote to a contract topic, read
# back by a subscriber in another language that has only the committed contract.
say "a Python subscriber reads every record of the run with only asyncapi/"
scripts/install-tools.sh subscriber
# A filtered run (`just test <filter>`) produces too little to ask for every channel.
every=(); [ $# -gt 0 ] || every=(--require-all)
PYTHONPATH="$PMCORE_STACK_DIR/pylib" python3 tools/subscriber/read_topics.py --since-ms "$fuzz_since_ms" "${every[@]}" || status=1

# The fault suite, short form, on the debug builds made above (`just chaos` runs the
# long one on release builds).
if [ $# -eq 0 ]; then
  say "the fault suite, short form (tools/chaos)"
  PMCORE_BUILD=debug scripts/chaos.sh --short || status=1
fi

# The embedded broker alone (a private tansu, a plain Python consumer group): a group
# it wedges after a stall must recover in its next generation, as pmcore's consumers
# move it (docs/decisions/0011); prints `broker: passed` once tansu stops wedging groups.
if [ $# -eq 0 ] && command -v tansu >/dev/null; then
  say "the embedded broker after a stall, outside pmcore (tools/broker/pause_repro.py)"
  PYTHONPATH="$PMCORE_STACK_DIR/pylib" python3 -u tools/broker/pause_repro.py --accept-moved 2>&1 \
    | grep -v '^%' || status=1
fi
# Each integration test made a database of its own (pmcore_t_*). Left behind, they
# cost the stack at rest: Postgres's autovacuum launcher starts a worker for every
# database once a minute (90 of them made it 0.8 % of a core, issue 16).
say "dropping the tests' databases"
for db in $(PGPASSWORD=pmcore psql -h 127.0.0.1 -p "$PMCORE_PG_PORT" -U pmcore -d postgres -tAc \
  "select datname from pg_database where datname like 'pmcore\_t\_%'"); do
  PGPASSWORD=pmcore psql -h 127.0.0.1 -p "$PMCORE_PG_PORT" -U pmcore -d postgres -qc \
    "drop database \"$db\" with (force)" || true
done
exit $status
