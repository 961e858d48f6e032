#!/usr/bin/env bash
# The mesh's main job, for now: the HBONE demo (two workloads, one mesh CA,
# a tunnel, and the refusals). Becomes the local mesh demo when it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo run --quiet -p hbone --example hbone-demo
