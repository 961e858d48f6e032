#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, component and
# end-to-end tests (e2e/, as root: they run the real binaries in network
# namespaces, so the binaries are built first; a test build alone does not
# build other packages' binaries). nextest does not run doc tests, so the project
# keeps runnable examples in examples/ and benches/, not in doc comments.
# Usage: scripts/test.sh [extra nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
  echo "test: cargo-nextest not found, using cargo test" >&2
  cargo test --workspace --all-targets --no-fail-fast "$@"
fi
