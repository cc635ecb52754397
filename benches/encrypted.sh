#!/usr/bin/env bash
# Push and restore speed of an encrypted repository against a plain one, on the peers
# workload's checkpoints (`gen_weights` fp32 and bf16, SIZE MiB each): each run pushes the
# checkpoint into a new plain and a new encrypted repository (fresh local index each, order
# alternating from run to run) and restores both; prints the median wall time of each and the
# median of the per-run ratios encrypted / plain per workload.
# Run by hand, not in CI:  bash benches/encrypted.sh [SIZE_MIB] [RUNS]   (default 512, 5)
# PEERS_DIR=/dev/shm puts everything in memory, to compare ferry's own cost rather than the
# disk's (default: a temporary folder on disk). CIPHER=xchacha20poly1305 measures that cipher
# instead of the default (aes256gcmsiv).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-512}
runs=${2:-5}
cipher=(${CIPHER:+--cipher "$CIPHER"})
cargo build --release --quiet --bin ferry --example gen_weights
target=${CARGO_TARGET_DIR:-target}
ferry=$target/release/ferry
gen=$target/release/examples/gen_weights
work=$(mktemp -d "${PEERS_DIR:-${TMPDIR:-/tmp}}/ferry-encrypted.XXXXXX")
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/f32" "$work/bf16"
"$gen" "$work/f32/model.safetensors" "$size" f32 1 0 2>/dev/null
"$gen" "$work/bf16/model.safetensors" "$size" bf16 1 0 2>/dev/null
"$ferry" key generate "$work/key" >/dev/null

# timed LABEL -- command...: appends "LABEL wall" to $work/times.
timed() {
  local label=$1; shift 2
  /usr/bin/time -f "%e" -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
  echo "$label $(cat "$work/t")" >>"$work/times"
}

one() { # workload kind run
  local w=$1 kind=$2 r=$3 repo="$work/repo-$1-$2-$3" idx="$work/idx-$1-$2-$3"
  local key=()
  if [ "$kind" = encrypted ]; then
    key=(--key-file "$work/key")
    "$ferry" --index-dir "$idx" init "file://$repo" --encrypt "${cipher[@]}" "${key[@]}" >/dev/null
  fi
  timed "$w push $kind" -- "$ferry" --index-dir "$idx" push "$work/$w" "file://$repo" --name m "${key[@]}"
  timed "$w restore $kind" -- "$ferry" --index-dir "$idx" restore "file://$repo" m "$work/out-$w-$kind-$r" "${key[@]}"
  rm -rf "$repo" "$idx" "$work/out-$w-$kind-$r"
}

for r in $(seq 1 "$runs"); do
  for w in f32 bf16; do
    if [ $((r % 2)) -eq 1 ]; then one "$w" plain "$r"; one "$w" encrypted "$r"
    else one "$w" encrypted "$r"; one "$w" plain "$r"; fi
  done
done

python3 - "$work/times" "$size" <<'PY'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    w, op, kind, t = line.split()
    times.setdefault((w, op), {}).setdefault(kind, []).append(float(t))
size = int(sys.argv[2])
# "ratio" is the median of the per-run ratios (each run's plain and encrypted pass are
# adjacent, so a slow spell of the machine or the disk moves both sides of a pair).
print(f"{'workload':<24} {'plain s':>8} {'encrypted s':>12} {'ratio':>6}   per-run encrypted/plain")
for (w, op), k in times.items():
    p, e = statistics.median(k["plain"]), statistics.median(k["encrypted"])
    pairs = [b / a for a, b in zip(k["plain"], k["encrypted"])]
    per = " ".join(f"{r:.2f}" for r in pairs)
    print(f"{op + ' ' + w + f' {size} MiB':<24} {p:8.2f} {e:12.2f} {statistics.median(pairs):6.2f}   {per}")
PY
