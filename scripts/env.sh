# Addresses of the development stack. Sourced by the justfile recipes and scripts;
# every value can be overridden from the environment (e.g. when a port is taken).
export PMCORE_PG_PORT="${PMCORE_PG_PORT:-5432}"
export PMCORE_KAFKA_PORT="${PMCORE_KAFKA_PORT:-9092}"
export PMCORE_S3_PORT="${PMCORE_S3_PORT:-9000}"
export PMCORE_SMTP_PORT="${PMCORE_SMTP_PORT:-1025}"
# The SMTP sink's web inbox (MailDev here, Mailpit in docker compose).
export PMCORE_MAIL_UI_PORT="${PMCORE_MAIL_UI_PORT:-8025}"
export PMCORE_DATABASE_URL="${PMCORE_DATABASE_URL:-postgres://pmcore:pmcore@127.0.0.1:${PMCORE_PG_PORT}/pmcore}"
# Each service connects with its own login (flyway/logins/service-logins.sql); the
# URL above is the owner's, for migrations and tools.
export PMCORE_APP_DB_PASSWORD="${PMCORE_APP_DB_PASSWORD:-pmcore-app-dev}"
service_database_url() { # service_database_url SERVICE (e.g. der-gateway-relay)
  local role
  case "$1" in der-gateway-relay) role=relay ;; *) role="${1//-/_}" ;; esac
  echo "postgres://pmcore_${role}_app:${PMCORE_APP_DB_PASSWORD}@127.0.0.1:${PMCORE_PG_PORT}/pmcore"
}
# The embedded broker (tansu 0.6) panics in its idempotent-producer check under load
# and stops serving (docs/decisions/0010-embedded-broker-without-idempotence.md), so
# what runs from here produces without idempotence; the services of docker-compose.yml
# (Apache Kafka) keep the default, on.
export PMCORE_KAFKA_IDEMPOTENCE="${PMCORE_KAFKA_IDEMPOTENCE:-false}"
export PMCORE_KAFKA_BROKERS="${PMCORE_KAFKA_BROKERS:-127.0.0.1:${PMCORE_KAFKA_PORT}}"
export PMCORE_S3_ENDPOINT="${PMCORE_S3_ENDPOINT:-http://127.0.0.1:${PMCORE_S3_PORT}}"
export PMCORE_S3_ACCESS_KEY="${PMCORE_S3_ACCESS_KEY:-pmcore}"
export PMCORE_S3_SECRET_KEY="${PMCORE_S3_SECRET_KEY:-pmcore-secret}"
export PMCORE_STACK_DIR="${PMCORE_STACK_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.stack}"
# Development credentials: the api signs tokens with this key and creates this admin
# client on a fresh database. Never use these values outside a development machine.
export PMCORE_AUTH_JWT_SECRET="${PMCORE_AUTH_JWT_SECRET:-pmcore-development-signing-key-0123456789}"
# The audit log's development checkpoint key (`audit-tool keygen <origin>` makes one).
export PMCORE_AUDIT_LOG_SIGNING_KEY="${PMCORE_AUDIT_LOG_SIGNING_KEY:-PRIVATE+KEY+pmcore.local/audit-log+61ddea17+AUdXc7+poU9fFV0CwDGAZYk3xu9vIB/J6dkVEhy8g5mF}"
# Messaging: the development key that seals webhook secrets (`messaging-tool keygen`
# makes one), the SMTP sink, and webhooks to local receivers allowed (dev only).
export PMCORE_MESSAGING_SECRETS_KEY="${PMCORE_MESSAGING_SECRETS_KEY:-cG1jb3JlLWRldmVsb3BtZW50LXNlY3JldHMta2V5LTA=}"
export PMCORE_SMTP_URL="${PMCORE_SMTP_URL:-smtp://127.0.0.1:${PMCORE_SMTP_PORT}}"
export PMCORE_MESSAGING_ALLOW_PRIVATE_TARGETS="${PMCORE_MESSAGING_ALLOW_PRIVATE_TARGETS:-true}"
export PMCORE_BOOTSTRAP_ORGANIZATION="${PMCORE_BOOTSTRAP_ORGANIZATION:-Northwind Electric}"
export PMCORE_BOOTSTRAP_CLIENT_ID="${PMCORE_BOOTSTRAP_CLIENT_ID:-01900000-0000-7000-8000-000000000001}"
export PMCORE_BOOTSTRAP_CLIENT_SECRET="${PMCORE_BOOTSTRAP_CLIENT_SECRET:-pmcore-dev-admin-secret}"
# The system people run (`./dev up`: the stack's services, the seeds, the simulator)
# is built optimized; PMCORE_BUILD=debug builds it faster. `just run` stays debug.
export PMCORE_BUILD="${PMCORE_BUILD:-release}"
if [ "$PMCORE_BUILD" = release ]; then PMCORE_RUN_FLAGS="--release"; else PMCORE_RUN_FLAGS=""; fi
export PMCORE_RUN_FLAGS
