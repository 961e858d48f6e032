#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test the mesh.
# Idempotent and quick when everything is there: it only calls apt-get for
# missing tools. Sourced by scripts/test.sh, scripts/demo.sh and .ci/run.
set -euo pipefail

# tool -> Debian package that provides it
declare -A NEEDED=(
  [protoc]=protobuf-compiler
  [ip]=iproute2
  [ss]=iproute2
  [iptables]=iptables
  [nft]=nftables
)

missing=()
for tool in "${!NEEDED[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${NEEDED[$tool]}")
done

# protoc's well-known types (google/protobuf/*.proto) come in a separate package.
[[ -f /usr/include/google/protobuf/any.proto ]] || missing+=(libprotobuf-dev)

if ((${#missing[@]})); then
  # de-duplicate
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages: ${missing[*]}; run as root or install them with apt-get" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust (rustup) first" >&2
  exit 1
fi

# Builds land outside the clone so repeated runs reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mesh-target}"
