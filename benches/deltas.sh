#!/usr/bin/env bash
# Element deltas (issue 11): bytes stored per training step, over the file's size, for a
# "full fine-tune" series (F32, every element nudged by a relative ~1e-3 per step) and an "RL"
# series (BF16 cast from an F32 master after a tiny update: ~1 % of BF16 elements change per
# step), pushed step by step to a file:// repository created with `--deltas`, next to the
# same pushes into a repository without deltas (ferry as it was). Then the time to restore the
# first and the newest step of the delta repository.
# Run by hand (not in CI):  bash benches/deltas.sh [MIB] [STEPS] [DEPTH]
# Targets (issue 11): fine-tune step <= 0.60 of the file, RL step <= 0.03, restoring the
# newest of 5 steps <= 2x the time of restoring the first.
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-256}
steps=${2:-5}
depth=${3:-4}
cargo build --release --quiet --bin ferry --example gen_weights
bin=${CARGO_TARGET_DIR:-target}/release/ferry
gen=${CARGO_TARGET_DIR:-target}/release/examples/gen_weights
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
printf '%-9s %4s %12s %12s %7s %12s %7s %7s %11s %8s\n' \
  series step file_bytes delta_bytes ratio plain_bytes ratio deltas read_back push_s
for series in finetune rl; do
  "$gen" --series "$series" "$work/$series" "$mib" "$steps" 1 2>/dev/null
  "$bin" --json init "file://$work/repo-$series" --deltas "$depth" >/dev/null
  "$bin" --json init "file://$work/plain-$series" >/dev/null
  for ((k = 0; k < steps; k++)); do
    src=$work/$series/step-$k
    size=$(stat -c %s "$src/model.safetensors")
    start=$(date +%s.%N)
    push=$("$bin" --index-dir "$work/idx" --json push "$src" "file://$work/repo-$series" --name ckpt)
    wall=$(python3 -c "print($(date +%s.%N) - $start)")
    sent=$(echo "$push" | field '["bytes_uploaded"]')
    ndelta=$(echo "$push" | field '["chunks_delta"]')
    # Bytes read back from the repository to encode deltas (the local base cache spares most).
    readb=$(echo "$push" | field '["bytes_read_for_deltas"]')
    plain=$("$bin" --index-dir "$work/idx-plain" --json push "$src" "file://$work/plain-$series" --name ckpt |
      field '["bytes_uploaded"]')
    printf '%-9s %4d %12d %12d %7.3f %12d %7.3f %7d %11d %8.2f\n' "$series" "$k" "$size" "$sent" \
      "$(python3 -c "print($sent / $size)")" "$plain" "$(python3 -c "print($plain / $size)")" \
      "$ndelta" "$readb" "$wall"
  done
  # Restore the first and the newest step (the newest reads up to DEPTH + 1 frames a chunk).
  snaps=$("$bin" --json snapshots "file://$work/repo-$series" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(" ".join(s["snapshot"] for s in d["snapshots"]))')
  first=$(echo "$snaps" | awk '{print $1}')
  newest=$(echo "$snaps" | awk '{print $NF}')
  for which in first newest; do
    id=$([ "$which" = first ] && echo "$first" || echo "$newest")
    rm -rf "$work/restore"
    start=$(date +%s.%N)
    "$bin" --index-dir "$work/idx" --json restore "file://$work/repo-$series" "ckpt@$id" "$work/restore" >/dev/null
    wall=$(python3 -c "print($(date +%s.%N) - $start)")
    printf '%-9s restore %-6s %8.2f s\n' "$series" "$which" "$wall"
  done
  "$bin" --json verify "file://$work/repo-$series" --read-data | field '["ok"]' | grep -q True
  rm -rf "$work/$series"
done
echo "files: $mib MiB per step, $steps steps, --deltas $depth; ratio = bytes stored / file size"
