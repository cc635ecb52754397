#!/usr/bin/env bash
# What a watching pull job (daemon, `kind = "pull"`, `watch = true`) asks of the store while
# nothing is new: the requests the S3 server (moto) logged for the repository's prefix during
# SECONDS of idle watching with `poll = "250ms"`, grouped by method, object kind and status.
# Counts requests, not speed, so a debug build will do (FERRY_BIN, default target/debug/ferry).
# Run by hand (not in CI):  bash benches/pull_watch.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
bin=${FERRY_BIN:-${CARGO_TARGET_DIR:-target}/debug/ferry}
[ -x "$bin" ] || cargo build --quiet --bin ferry
work=$(mktemp -d)
daemon=
cleanup() {
  if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
eval "$(bash scripts/test-servers.sh env)"
curl -s -o /dev/null "$FERRY_TEST_S3_ENDPOINT" || { echo "moto is not running: bash scripts/test-servers.sh start" >&2; exit 1; }
log=.test-servers/moto.log
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
export AWS_ENDPOINT=$FERRY_TEST_S3_ENDPOINT
prefix="bench-pull-watch-$(date +%s)-$$"
repo="s3://ferry-test/$prefix"
mkdir -p "$work/src"
head -c 8M /dev/urandom > "$work/src/model.bin"
echo '{"step": 1}' > "$work/src/config.json"
"$bin" --index-dir "$work/push-idx" push "$work/src" "$repo" --name model >/dev/null
cat > "$work/ferry.toml" <<TOML
version = 1
[[jobs]]
name = "serve"
kind = "pull"
from = "$repo"
ref = "model"
dest = "$work/serve"
watch = true
poll = "250ms"
TOML
"$bin" --index-dir "$work/idx" daemon --config "$work/ferry.toml" --bind 127.0.0.1:0 2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 600); do [ -e "$work/serve/current" ] && break; sleep 0.1; done
[ -e "$work/serve/current" ] || { echo "nothing published; daemon log:" >&2; cat "$work/daemon.log" >&2; exit 1; }
sleep 1   # let the first look open the repository
before=$(wc -l < "$log")
sleep "$secs"
after=$(wc -l < "$log")
echo "requests for $prefix in ${secs}s of idle watching (poll 250ms):"
sed -n "$((before + 1)),${after}p" "$log" | grep -F "/$prefix" \
  | sed -E 's/.*"([A-Z]+) [^ ]*'"$prefix"'\/?([^ ?]*)[^"]*" ([0-9]+).*/\1 \2 \3/' \
  | sed -E 's/[0-9a-f]{64}/<id>/g' | sort | uniq -c
