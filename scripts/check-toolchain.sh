#!/usr/bin/env bash
# One source of truth for the Rust toolchain: `rust-version` in Cargo.toml. Fails when the
# Dockerfile's RUST_VERSION or the README's "Rust toolchain (X+)" says otherwise, or when the
# installed rustc is older. `--self-test` proves the check fails on a drifted copy.
# Usage: scripts/check-toolchain.sh [--self-test] [ROOT]
set -euo pipefail

check() { # root → 0 when all agree
  local root=$1 want docker readme ok=0
  want=$(sed -nE 's/^rust-version *= *"([0-9.]+)"/\1/p' "$root/Cargo.toml")
  [ -n "$want" ] || { echo "check-toolchain: Cargo.toml has no rust-version" >&2; return 1; }
  docker=$(sed -nE 's/^ARG RUST_VERSION=([0-9.]+).*/\1/p' "$root/docker/Dockerfile")
  if [ "$docker" != "$want" ]; then
    echo "check-toolchain: docker/Dockerfile has RUST_VERSION=${docker:-<none>}, Cargo.toml rust-version = $want: set ARG RUST_VERSION=$want" >&2
    ok=1
  fi
  readme=$(sed -nE 's/.*Rust toolchain \(([0-9.]+)\+\).*/\1/p' "$root/README.md" | head -1)
  if [ "$readme" != "$want" ]; then
    echo "check-toolchain: README.md says Rust toolchain (${readme:-<none>}+), Cargo.toml rust-version = $want: write \"Rust toolchain ($want+)\"" >&2
    ok=1
  fi
  [ $ok = 0 ] && echo "check-toolchain: rust-version $want (Cargo.toml, docker/Dockerfile, README.md agree)"
  return $ok
}

if [ "${1:-}" = --self-test ]; then
  root=$(cd "${2:-$(dirname "$0")/..}" && pwd)
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/docker"
  cp "$root/Cargo.toml" "$root/README.md" "$tmp/"
  sed -E 's/^ARG RUST_VERSION=.*/ARG RUST_VERSION=1.0.0/' "$root/docker/Dockerfile" >"$tmp/docker/Dockerfile"
  if check "$tmp" 2>/dev/null; then echo "check-toolchain: self-test: a drifted Dockerfile passed" >&2; exit 1; fi
  cp "$root/docker/Dockerfile" "$tmp/docker/Dockerfile"
  sed -i -E 's/Rust toolchain \([0-9.]+\+\)/Rust toolchain (1.0.0+)/' "$tmp/README.md"
  if check "$tmp" 2>/dev/null; then echo "check-toolchain: self-test: a drifted README passed" >&2; exit 1; fi
  echo "check-toolchain: self-test: drift in the Dockerfile and in the README is caught"
  exit 0
fi

root=$(cd "${1:-$(dirname "$0")/..}" && pwd)
check "$root"
want=$(sed -nE 's/^rust-version *= *"([0-9.]+)"/\1/p' "$root/Cargo.toml")
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
  echo "check-toolchain: rustc $have is older than rust-version $want: rustup update" >&2
  exit 1
fi
