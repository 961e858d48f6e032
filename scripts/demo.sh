#!/usr/bin/env bash
# The mesh's main job: a two-node cluster in network namespaces on this host
# (control plane, node agents, ztunnels), the article's example narrated:
# mTLS between pods with their SPIFFE identities, a policy denying a caller,
# a running pod enrolled without restart. Cleans up after itself.
# Needs root (network namespaces, iptables).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh needs root: it creates network namespaces and iptables rules (try: sudo scripts/demo.sh)" >&2
  exit 1
fi
cargo build --workspace --bins
"$CARGO_TARGET_DIR/debug/meshctl" demo "$@"
