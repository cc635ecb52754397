#!/usr/bin/env bash
# Bytes sent and wall time of `ferry mirror` for a fine-tuned checkpoint, against a plain copy
# of the changed files (what rclone/AzCopy send: every changed file whole). Runs against the
# local test servers (moto for S3, Azurite for Azure Blob), which scripts/test-servers.sh
# installs and starts. Run by hand (not in CI):  bash benches/mirror.sh [MIB] [CHANGE_PERCENT]
# Data: one bf16 safetensors file from examples/gen_weights; the successor regenerates
# CHANGE_PERCENT of its tensors (fine-tuning a few layers; each tensor is picked with that
# probability, so seed 3 is used: it changes 20 MB of the 128 MiB file at 10 %).
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-256}
change=${2:-10}
cargo build --release --quiet --bin ferry --example gen_weights
bin=${CARGO_TARGET_DIR:-target}/release/ferry
gen=${CARGO_TARGET_DIR:-target}/release/examples/gen_weights
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
export AWS_ENDPOINT=$FERRY_TEST_S3_ENDPOINT AZURE_STORAGE_USE_EMULATOR=true
export AZURITE_BLOB_STORAGE_URL=$FERRY_TEST_AZURITE_URL
mkdir -p "$work/src"
"$gen" "$work/src/model.safetensors" "$mib" bf16 3 0 >/dev/null 2>&1
size=$(stat -c %s "$work/src/model.safetensors")
run=$(date +%s)-$$
printf '%-6s %-8s %12s %12s %8s %8s\n' cloud pass bytes_sent plain_copy ratio wall_s
for dest in "s3://ferry-test/bench-mirror-$run" "az://ferry-test/bench-mirror-$run"; do
  cloud=${dest%%:*}
  "$gen" "$work/src/model.safetensors" "$mib" bf16 3 0 >/dev/null 2>&1
  for pass in first unchanged changed; do
    if [ "$pass" = changed ]; then
      "$gen" "$work/src/model.safetensors" "$mib" bf16 3 "$change" >/dev/null 2>&1
    fi
    start=$(date +%s.%N)
    sent=$("$bin" --index-dir "$work/idx-$cloud" --json mirror "$work/src" "$dest" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_sent"])')
    wall=$(python3 -c "print($(date +%s.%N) - $start)")
    plain=$size
    [ "$pass" = unchanged ] && plain=0
    ratio=$(python3 -c "print(f'{$sent / $plain:.3f}' if $plain else '-')")
    printf '%-6s %-8s %12d %12d %8s %8.2f\n' "$cloud" "$pass" "$sent" "$plain" "$ratio" "$wall"
  done
  "$bin" --index-dir "$work/idx-$cloud" verify --mirror "$work/src" "$dest" >/dev/null
done
echo "file: $size bytes ($mib MiB bf16), $change % of tensors changed between versions"
