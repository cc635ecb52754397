#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ (cargo-fuzz + libFuzzer, one per parser of remote data) and
# runs each for SECONDS (default 15), starting from fuzz/seeds/TARGET and the corpus kept in
# fuzz/corpus/TARGET. Prints executions per target; fails on the first crash, leak or OOM
# (the input lands in fuzz/artifacts/TARGET; replay it with `cargo fuzz run TARGET FILE`).
#
# cargo-fuzz needs nightly compiler features (-Zsanitizer=address, -Cpasses=sancov-module);
# RUSTC_BOOTSTRAP=1 unlocks them on the stable toolchain, so no nightly is installed.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
shift || true
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Keep the fuzz build beside the main one when a target dir is set.
target_dir=()
if [ -n "${CARGO_TARGET_DIR:-}" ]; then target_dir=(--target-dir "$CARGO_TARGET_DIR/fuzz"); fi

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
cargo fuzz build "${target_dir[@]}"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  if ! cargo fuzz run "${target_dir[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$logs/$t" 2>&1; then
    tail -n 60 "$logs/$t" >&2
    echo "fuzz: $t FAILED (see fuzz/artifacts/$t)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -1)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  echo "fuzz: $t: ${runs:-?} executions in ${secs}s, corpus $corpus inputs"
done
