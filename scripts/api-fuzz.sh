#!/usr/bin/env bash
# Property-based runs of the api's, the audit log's and messaging's OpenAPI documents against
# the running services (schemathesis, fixed seed, bounded examples per operation):
# no 5xx, and every response must match the document. Uses its own database and
# topic prefix; the audit log and messaging accept the api's tokens (same key). Then the
# audit trail of the run goes through the independent verifier, and every reference page
# (the three /docs and the AsyncAPI page) is opened in headless Chromium, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
say() { printf '\033[1m[fuzz]\033[0m %s\n' "$*" >&2; }

SCHEMATHESIS=3.39.16
HYPOTHESIS=6.115.0
EXAMPLES="${PMCORE_FUZZ_EXAMPLES:-25}"
# The suite runs it on the debug builds it just made; the fault suite on release ones.
FUZZ_BUILD="${PMCORE_FUZZ_BUILD:-debug}"
lib="$PMCORE_STACK_DIR/pylib"
if ! PYTHONPATH="$lib" python3 -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '$SCHEMATHESIS')" 2>/dev/null; then
  say "installing schemathesis $SCHEMATHESIS (PyPI) into $lib"
  python3 -m pip install --quiet --disable-pip-version-check --target "$lib" \
    "schemathesis==$SCHEMATHESIS" "hypothesis==$HYPOTHESIS"
fi
# The independent audit verifier's Ed25519 (tools/audit/verify_export.py).
CRYPTOGRAPHY=48.0.0
if ! PYTHONPATH="$lib" python3 -c "import cryptography, sys; sys.exit(cryptography.__version__ != '$CRYPTOGRAPHY')" 2>/dev/null; then
  say "installing cryptography $CRYPTOGRAPHY (PyPI) into $lib"
  python3 -m pip install --quiet --disable-pip-version-check --target "$lib" "cryptography==$CRYPTOGRAPHY"
fi

db="pmcore_fuzz_$RANDOM$RANDOM"
prefix="fuzz$RANDOM$RANDOM."
export PMCORE_AUTH_JWT_SECRET="${PMCORE_AUTH_JWT_SECRET:-fuzz-$RANDOM$RANDOM-signing-key-for-this-run-only}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port) ops=$(free_port)
admin_url="${PMCORE_DATABASE_URL%/*}/postgres"
psql -q "$admin_url" -c "create database $db"
log="$PMCORE_STACK_DIR/api-fuzz.log"
PMCORE_DATABASE_URL="${PMCORE_DATABASE_URL%/*}/$db" PMCORE_MIGRATE_ON_START=true \
  PMCORE_API_LISTEN="127.0.0.1:$port" PMCORE_API_OPS_LISTEN="127.0.0.1:$ops" PMCORE_KAFKA_TOPIC_PREFIX="$prefix" \
  PMCORE_API_RATE_LIMIT_PER_SECOND=100000 PMCORE_API_RATE_LIMIT_BURST=100000 PMCORE_LOG=warn \
  "target/$FUZZ_BUILD/api" >"$log" 2>&1 &
api=$!
audit=""
messaging=""
cleanup() {
  kill "$api" $audit $messaging 2>/dev/null || true
  wait "$api" $audit $messaging 2>/dev/null || true
  psql -q "$admin_url" -c "drop database if exists $db with (force)" || true
}
trap cleanup EXIT

for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "http://127.0.0.1:$ops/readyz" 2>/dev/null && break
  sleep 0.2
done
token=""
for _ in $(seq 1 100); do
  token=$(curl -fsS "http://127.0.0.1:$port/oauth/token" -d grant_type=client_credentials \
    -d client_id="$PMCORE_BOOTSTRAP_CLIENT_ID" -d client_secret="$PMCORE_BOOTSTRAP_CLIENT_SECRET" 2>/dev/null \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' 2>/dev/null) && break
  sleep 0.2
done
[ -n "$token" ] || { say "the api did not come up; see $log"; exit 1; }

say "schemathesis: seed 1, $EXAMPLES examples per operation, every check"
# ignored_auth is left out: it expects 401 on every operation, the token endpoint included.
PYTHONPATH="$lib" python3 -m schemathesis.cli run "http://127.0.0.1:$port/openapi.json" \
  --experimental=openapi-3.1 -H "Authorization: Bearer $token" \
  --checks all --exclude-checks ignored_auth \
  --hypothesis-seed 1 --hypothesis-max-examples "$EXAMPLES" --hypothesis-deadline None \
  --hypothesis-suppress-health-check all --no-color

audit_port=$(free_port) audit_ops=$(free_port)
PMCORE_DATABASE_URL="${PMCORE_DATABASE_URL%/*}/$db" PMCORE_MIGRATE_ON_START=true \
  PMCORE_AUDIT_LOG_LISTEN="127.0.0.1:$audit_port" PMCORE_AUDIT_LOG_OPS_LISTEN="127.0.0.1:$audit_ops" PMCORE_KAFKA_TOPIC_PREFIX="$prefix" PMCORE_LOG=warn \
  "target/$FUZZ_BUILD/audit-log" >"$PMCORE_STACK_DIR/audit-fuzz.log" 2>&1 &
audit=$!
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "http://127.0.0.1:$audit_ops/readyz" 2>/dev/null && break
  sleep 0.2
done
# The api's run left a trail on the shared topics: let the audit log read it.
sleep 5
curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:$audit_port/v1/audit/checkpoint" || true
say "schemathesis against the audit log: seed 1, $EXAMPLES examples per operation"
PYTHONPATH="$lib" python3 -m schemathesis.cli run "http://127.0.0.1:$audit_port/openapi.json" \
  --experimental=openapi-3.1 -H "Authorization: Bearer $token" \
  --checks all \
  --hypothesis-seed 1 --hypothesis-max-examples "$EXAMPLES" --hypothesis-deadline None \
  --hypothesis-suppress-health-check all --no-color

say "the audit trail of that run, exported and checked by an independent verifier"
export_json=""
for _ in $(seq 1 60); do
  export_json=$(curl -fsS -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{}' "http://127.0.0.1:$audit_port/v1/audit/exports" 2>/dev/null) && break
  sleep 0.5
done
[ -n "$export_json" ] || { say "the audit log exported nothing; see $PMCORE_STACK_DIR/audit-fuzz.log"; exit 1; }
export_id=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "$export_json")
url=""
for _ in $(seq 1 120); do # the export is written in the background
  url=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$audit_port/v1/audit/exports/$export_id" \
    | python3 -c 'import json, sys; e = json.load(sys.stdin); print(e["url"] or "") if e["status"] != "failed" else sys.exit(e["error"])') || exit 1
  [ -n "$url" ] && break
  sleep 0.5
done
[ -n "$url" ] || { say "export $export_id was not written in 60 s"; exit 1; }
file="$PMCORE_STACK_DIR/audit-export.jsonl"
curl -fsS -o "$file" "$url"
vkey=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$audit_port/v1/audit/checkpoint/key" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["verifier_key"])')
PYTHONPATH="$lib" python3 tools/audit/verify_export.py "$file" "$vkey"
# And it must notice a change: one character of the last entry's subject.
python3 - "$file" <<'PY'
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
last = json.loads(lines[-1])
last["entry"]["subject"] += "x"
lines[-1] = json.dumps(last)
open(sys.argv[1] + ".tampered", "w", encoding="utf-8").write("\n".join(lines) + "\n")
PY
if PYTHONPATH="$lib" python3 tools/audit/verify_export.py "$file.tampered" "$vkey"; then
  say "the independent verifier accepted a tampered export"; exit 1
fi

messaging_port=$(free_port) messaging_ops=$(free_port)
# Webhooks the fuzzer's endpoints would get go nowhere private, and no SMTP server.
PMCORE_DATABASE_URL="${PMCORE_DATABASE_URL%/*}/$db" PMCORE_MIGRATE_ON_START=true \
  PMCORE_MESSAGING_LISTEN="127.0.0.1:$messaging_port" PMCORE_MESSAGING_OPS_LISTEN="127.0.0.1:$messaging_ops" PMCORE_KAFKA_TOPIC_PREFIX="$prefix" PMCORE_LOG=warn \
  PMCORE_MESSAGING_ALLOW_PRIVATE_TARGETS=false \
  PMCORE_MESSAGING_RATE_LIMIT_PER_SECOND=100000 PMCORE_MESSAGING_RATE_LIMIT_BURST=100000 \
  env -u PMCORE_SMTP_URL "target/$FUZZ_BUILD/messaging" >"$PMCORE_STACK_DIR/messaging-fuzz.log" 2>&1 &
messaging=$!
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "http://127.0.0.1:$messaging_ops/readyz" 2>/dev/null && break
  sleep 0.2
done
say "schemathesis against messaging: seed 1, $EXAMPLES examples per operation"
PYTHONPATH="$lib" python3 -m schemathesis.cli run "http://127.0.0.1:$messaging_port/openapi.json" \
  --experimental=openapi-3.1 -H "Authorization: Bearer $token" \
  --checks all \
  --hypothesis-seed 1 --hypothesis-max-examples "$EXAMPLES" --hypothesis-deadline None \
  --hypothesis-suppress-health-check all --no-color

say "the reference pages in headless Chromium, with no network beyond loopback"
node tools/node/asyncapi.mjs html >/dev/null
docs_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory asyncapi/dist "$docs_port" >/dev/null 2>&1 &
docs_server=$!
trap 'kill $docs_server 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 1 50); do curl -fsS -o /dev/null "http://127.0.0.1:$docs_port/" 2>/dev/null && break; sleep 0.1; done
# What each page must show once rendered: operations (paths or ids) and channels.
node tools/node/pages.mjs "$PMCORE_STACK_DIR/screenshots" \
  "api-docs|http://127.0.0.1:$port/docs/|/v1/programs;/v1/dispatch-events/{id}/status;/oauth/token" \
  "audit-docs|http://127.0.0.1:$audit_port/docs/|/v1/audit/entries;/v1/audit/checkpoint" \
  "messaging-docs|http://127.0.0.1:$messaging_port/docs/|/v1/messaging/endpoints;/v1/messaging/messages" \
  "asyncapi-http|http://127.0.0.1:$docs_port/index.html|pm.programs.v1;der.telemetry.v1;publishProgramEvents;storeTelemetry" \
  "asyncapi-file|file://$PWD/asyncapi/dist/index.html|pm.dispatch-events.v1;publishDispatchLifecycle"
