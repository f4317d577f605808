#!/usr/bin/env bash
# Installs what the project needs and the machine lacks, pinned, only when missing:
# just, tansu (Kafka-protocol broker), s3s-fs (S3 server), the PostgreSQL server,
# the AsyncAPI validator's npm packages, Chromium for the page checks, and (`mail`) the dev stack's SMTP sink. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

JUST_VERSION=1.59.0
TANSU_VERSION=0.6.0
S3S_FS_VERSION=0.14.1

say() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

has_version() { # has_version BIN VERSION: BIN is on PATH and prints VERSION
  command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -q "$2"
}

cargo_install() { # cargo_install CRATE VERSION BIN [cargo args...]
  local crate=$1 version=$2 bin=$3; shift 3
  if has_version "$bin" "$version"; then return; fi
  say "building $crate $version from crates.io (one-time; several minutes on 2 cores)"
  local started=$SECONDS
  cargo install "$crate" --version "$version" --locked --quiet "$@"
  say "$crate installed in $((SECONDS - started)) s"
}

apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    say "need root (or sudo) to install Debian packages: $*"; exit 1
  fi
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  if [ $apt_updated = 0 ]; then $sudo apt-get update -qq; apt_updated=1; fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

want="${1:-all}"

export PATH="$HOME/.cargo/bin:$PATH"

if [ "$want" = all ] || [ "$want" = just ]; then
  cargo_install just "$JUST_VERSION" just
fi

if [ "$want" = all ] || [ "$want" = stack ]; then
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql postgresql-contrib
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  cargo_install s3s-fs "$S3S_FS_VERSION" s3s-fs --features binary
  # The SQLite engine keeps messages across broker restarts; dynostore gives memory://.
  cargo_install tansu "$TANSU_VERSION" tansu --features libsql,dynostore
fi

if [ "$want" = all ] || [ "$want" = node ]; then
  if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
  if [ ! -d tools/node/node_modules/@asyncapi/parser ] || [ tools/node/package-lock.json -nt tools/node/node_modules/.package-lock.json ]; then
    say "npm ci in tools/node/ (AsyncAPI parser, HTML renderer, Compose schema)"
    (cd tools/node && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

# The reference pages are checked in Debian's Chromium (driven by playwright-core).
if [ "$want" = all ] || [ "$want" = browser ]; then
  command -v chromium >/dev/null || apt_install chromium
fi

# The second-language subscriber of the suite (tools/subscriber/), pinned, beside
# schemathesis in the stack's Python library folder.
if [ "$want" = all ] || [ "$want" = subscriber ]; then
  lib="${PMCORE_STACK_DIR:-$PWD/.stack}/pylib"
  if ! PYTHONPATH="$lib" python3 -c "import confluent_kafka, fastavro, yaml, sys; sys.exit(not (confluent_kafka.__version__ == '2.16.1' and fastavro.__version__ == '1.13.1' and yaml.__version__ == '6.0.3'))" 2>/dev/null; then
    say "pip install confluent-kafka 2.16.1, fastavro 1.13.1, PyYAML 6.0.3 into $lib"
    python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$lib" \
      "confluent-kafka==2.16.1" "fastavro==1.13.1" "PyYAML==6.0.3"
  fi
fi

# Not in `all`: only stacks that send email need it.
if [ "$want" = mail ]; then
  if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
  if [ ! -x tools/mail/node_modules/.bin/maildev ] || [ tools/mail/package-lock.json -nt tools/mail/node_modules/.package-lock.json ]; then
    say "npm ci in tools/mail/ (MailDev, the SMTP sink with a web inbox)"
    (cd tools/mail && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
