#!/usr/bin/env bash
# Push throughput of one sharded push split over 1, 2 and 4 concurrent processes, into a
# file:// repository (the loopback servers cap at ~200 MB/s, so they would measure the
# server). Run by hand (not in CI):  bash benches/shards.sh [FILES] [MIB_PER_FILE]
# Data: FILES bf16 safetensors files from examples/gen_weights (compressible, like real
# weights). Each shard process gets its own empty index, as pods of an Indexed Job do.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-8}
mib=${2:-64}
cargo build --release --quiet --bin ferry --example gen_weights
bin=${CARGO_TARGET_DIR:-target}/release/ferry
gen=${CARGO_TARGET_DIR:-target}/release/examples/gen_weights
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
for i in $(seq 1 "$files"); do
  "$gen" "$work/src/model-$(printf %05d "$i")-of-$(printf %05d "$files").safetensors" "$mib" bf16 "$i" >/dev/null
done
total=$((files * mib))
cat "$work/src"/* >/dev/null # warm the page cache: measure ferry, not the disk
echo "source: $files files, $total MiB (bf16), $(nproc) cores"
printf '%-8s %10s %10s %12s %10s\n' shards wall_s MiB/s cpu_s cpu/wall
for n in 1 2 4; do
  repo="file://$work/repo-$n"
  "$bin" --index-dir "$work/idx-init-$n" init "$repo" >/dev/null
  start=$(date +%s.%N)
  pids=()
  for i in $(seq 0 $((n - 1))); do
    /usr/bin/time -f '%U %S' -o "$work/time-$n-$i" \
      "$bin" --index-dir "$work/idx-$n-$i" --json push "$work/src" "$repo" \
      --name bench --shard "$i/$n" --run "bench-$n" >"$work/out-$n-$i.json" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  end=$(date +%s.%N)
  cpu=$(cat "$work"/time-$n-* | awk '{c += $1 + $2} END {print c}')
  wall=$(echo "$end - $start" | bc -l)
  printf '%-8s %10.2f %10.1f %12.2f %10.2f\n' "$n" "$wall" "$(echo "$total / $wall" | bc -l)" \
    "$cpu" "$(echo "$cpu / $wall" | bc -l)"
  # The run must be committed and restore byte-identical.
  "$bin" --index-dir "$work/idx-r-$n" restore "$repo" bench "$work/restore-$n" >/dev/null
  diff -r "$work/src" "$work/restore-$n" >/dev/null || { echo "restore of $n shards differs" >&2; exit 1; }
  rm -rf "$work/restore-$n" "$work/repo-$n"
done
