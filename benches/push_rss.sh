#!/usr/bin/env bash
# Peak memory and throughput of pushing one large generated file to a file:// repository,
# then restoring it. Run by hand (not in CI):  bash benches/push_rss.sh [SIZE_MIB]
# Fails if peak RSS of the push exceeds 512 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2048}
limit_kib=$((512 * 1024))
cargo build --release --quiet --bin ferry
bin=${CARGO_TARGET_DIR:-target}/release/ferry
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "generating ${size_mib} MiB of random data in $work"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/weights.bin"

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -v "$@" >"$work/out.txt" 2>"$work/time.txt"
  local rss wall
  rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
  wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$work/time.txt")
  echo "$label: wall $wall, peak RSS $((rss / 1024)) MiB"
  echo "$rss"
}

push_rss=$(measure "push ${size_mib} MiB" "$bin" --index-dir "$work/idx" push "$work/weights.bin" "file://$work/repo" --name big | tee /dev/stderr | tail -1)
measure "restore ${size_mib} MiB" "$bin" --index-dir "$work/idx" restore "file://$work/repo" big "$work/out" | head -1
cmp "$work/weights.bin" "$work/out/weights.bin" && echo "restore: byte-identical"
if [ "$push_rss" -gt "$limit_kib" ]; then
  echo "FAIL: push peak RSS $((push_rss / 1024)) MiB exceeds 512 MiB" >&2
  exit 1
fi
