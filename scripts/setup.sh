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

# A persistent target directory only grows: every change leaves another set
# of test binaries and incremental state behind, and on a long-lived machine
# it filled the disk (the linker then dies with SIGBUS). When little space is
# left, drop what cargo rebuilds on demand: incremental state, and test
# executables older than three hours (no run of ours takes that long).
prune_target_dir() {
  local dir=$CARGO_TARGET_DIR min_gib=${MESH_TARGET_MIN_FREE_GIB:-20} free_kib
  [[ -d $dir ]] || return 0
  free_kib=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
  ((free_kib < min_gib * 1024 * 1024)) || return 0
  echo "setup: $((free_kib / 1024 / 1024)) GiB free under $dir (< $min_gib); pruning incremental state and old test binaries" >&2
  rm -rf "$dir/debug/incremental"
  if [[ -d $dir/debug/deps ]]; then
    find "$dir/debug/deps" -maxdepth 1 -type f -perm -u+x ! -name '*.so' -mmin +180 -delete
  fi
}
prune_target_dir
