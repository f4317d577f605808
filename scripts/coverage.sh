#!/usr/bin/env bash
# Line coverage of the whole suite against the running stack. The integration tests
# start the service binaries, so the binaries are built instrumented too, into their
# own target folder (the everyday build cache stays as it is).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-llvm-cov >/dev/null || cargo install cargo-llvm-cov --version 0.9.1 --locked
rustup component add llvm-tools-preview >/dev/null
export CARGO_TARGET_DIR="$PWD/target/coverage"
source <(cargo llvm-cov show-env --sh)
cargo llvm-cov clean --workspace
cargo build --bins --quiet
cargo nextest run --workspace --no-fail-fast
cargo llvm-cov report --summary-only
