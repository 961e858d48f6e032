#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, component and (as they
# arrive) end-to-end tests. nextest does not run doc tests, so the project
# keeps runnable examples in examples/ and benches/, not in doc comments.
# Usage: scripts/test.sh [extra nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
  echo "test: cargo-nextest not found, using cargo test" >&2
  cargo test --workspace --all-targets --no-fail-fast "$@"
fi
