#!/usr/bin/env bash
# Bytes read from the store and wall time of `ferry pull` on the serving side, against a full
# `ferry restore` (what a serving node does without pull: every file of every version again).
# The repository is on S3 (moto, started by scripts/test-servers.sh when not running).
# Run by hand (not in CI):  bash benches/pull.sh [MIB] [CHANGE_PERCENT]
# Data: one bf16 safetensors file from examples/gen_weights (seed 3); step 2 regenerates
# CHANGE_PERCENT of its tensors (about 16 % of the bytes at 10 %, as in benches/mirror.sh).
# Then element deltas (issue 11): two steps of the "rl" and "finetune" series
# (gen_weights --series) pushed into a repository made with `init --deltas 4`, and the bytes
# a pull of the delta step reads over its predecessor (bases taken from the local version)
# against a pull of it into an empty folder (the deltas and their bases: what a full restore
# reads). FERRY_BENCH_PROFILE=debug uses the debug build (bytes do not depend on the build;
# wall times do).
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-256}
change=${2:-10}
profile=${FERRY_BENCH_PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --release --quiet --bin ferry --example gen_weights
else
  cargo build --quiet --bin ferry --example gen_weights
fi
bin=${CARGO_TARGET_DIR:-target}/$profile/ferry
gen=${CARGO_TARGET_DIR:-target}/$profile/examples/gen_weights
work=$(mktemp -d)
started=0
cleanup() {
  rm -rf "$work"
  if [ "$started" = 1 ]; then bash scripts/test-servers.sh stop; fi
}
trap cleanup EXIT
if ! eval "$(bash scripts/test-servers.sh env)" || ! curl -s -o /dev/null "$FERRY_TEST_S3_ENDPOINT"; then
  bash scripts/test-servers.sh start
  started=1
  eval "$(bash scripts/test-servers.sh env)"
fi
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
export AWS_ENDPOINT=$FERRY_TEST_S3_ENDPOINT
repo="s3://ferry-test/bench-pull-$(date +%s)-$$"
mkdir -p "$work/src"
ferry() { "$bin" --index-dir "$work/idx" --json "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

"$gen" "$work/src/model.safetensors" "$mib" bf16 3 0 >/dev/null 2>&1
ferry push "$work/src" "$repo" --name model >/dev/null
"$gen" "$work/src/model.safetensors" "$mib" bf16 3 "$change" >/dev/null 2>&1
ferry push "$work/src" "$repo" --name model >/dev/null
size=$(stat -c %s "$work/src/model.safetensors")

printf '%-34s %14s %10s %8s\n' case bytes_read ratio wall_s
row() { # label, bytes read, seconds
  printf '%-34s %14d %10.3f %8.2f\n' "$1" "$2" "$(python3 -c "print($2 / $size)")" "$3"
}
timed() { # label, field, command...
  local label=$1 key=$2; shift 2
  local start out
  start=$(date +%s.%N)
  out=$("$@")
  row "$label" "$(echo "$out" | field "$key")" "$(python3 -c "print($(date +%s.%N) - $start)")"
}
timed "restore step 2 (full)" bytes_downloaded ferry restore "$repo" model@2 "$work/restored"
timed "pull step 1 into an empty folder" bytes_read_from_store ferry pull "$repo" model@1 "$work/serve"
timed "pull step 2 over step 1" bytes_read_from_store ferry pull "$repo" model@2 "$work/serve"
timed "pull step 2 again (nothing new)" bytes_read_from_store ferry pull "$repo" model@2 "$work/serve"
cmp "$work/src/model.safetensors" "$work/serve/current/model.safetensors"
echo "file: $size bytes ($mib MiB bf16), $change % of tensors changed between the steps; pulled step 2 is byte-identical"

echo
printf '%-34s %14s %10s %8s\n' "delta case" bytes_read ratio wall_s
for series in rl finetune; do
  "$gen" --series "$series" "$work/$series" "$mib" 2 1 >/dev/null 2>&1
  drepo="$repo-$series"
  ferry init "$drepo" --deltas 4 >/dev/null
  ferry push "$work/$series/step-0" "$drepo" --name ckpt >/dev/null
  pushed=$(ferry push "$work/$series/step-1" "$drepo" --name ckpt)
  size=$(stat -c %s "$work/$series/step-1/model.safetensors")
  row "$series: push of step 2 uploaded" "$(echo "$pushed" | field bytes_uploaded)" 0
  timed "$series: pull step 2, empty folder" bytes_read_from_store ferry pull "$drepo" ckpt@2 "$work/empty-$series"
  ferry pull "$drepo" ckpt@1 "$work/serve-$series" >/dev/null
  timed "$series: pull step 2 over step 1" bytes_read_from_store ferry pull "$drepo" ckpt@2 "$work/serve-$series"
  cmp "$work/$series/step-1/model.safetensors" "$work/serve-$series/current/model.safetensors"
  echo "$series: $size bytes per step ($mib MiB), --deltas 4; pulled step 2 is byte-identical"
done
