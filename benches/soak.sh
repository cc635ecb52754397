#!/usr/bin/env bash
# Memory soak of the daemon (issue 19): two jobs firing every second for MINUTES minutes, the
# daemon's resident memory (VmRSS) and its run count sampled every 30 s into a table.
#   bash benches/soak.sh MINUTES [azure]
# Workload: a push job (layout = "tree", every = "1s", settle = "2s") of a 50-file folder (300 KB each) where
# one file is rewritten with new bytes every 6 s, to a file:// repository; a replicate job
# (every = "1s") of that repository to a second file:// repository. With `azure`, a third job
# replicates it to Azurite as well (started by scripts/test-servers.sh if it is not running).
# Extra daemon environment (e.g. MALLOC_ARENA_MAX=2) passes through; FERRY_SOAK_WRAP prefixes
# the daemon's command (e.g. "heaptrack -o /tmp/soak" for a heap profile); FERRY_SOAK_TRIM=1
# calls glibc's malloc_trim(0) through gdb at the end and prints the RSS it gave back (memory
# freed but kept by the allocator, as opposed to memory in use); FERRY_BIN skips the build and
# runs that binary. Run by hand, not in CI.
# Fails when the last sample is above 1.2x the 4-minute sample or above 128 MiB (runs of at
# least 5 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?usage: benches/soak.sh MINUTES [azure]}
variant=${2:-file}
if [ -z "${FERRY_BIN:-}" ]; then
  cargo build --release --quiet --bin ferry
fi
bin=${FERRY_BIN:-${CARGO_TARGET_DIR:-target}/release/ferry}
work=$(mktemp -d)
daemon_pid=
ferry_pid=
started_servers=0
cleanup() {
  if [ -n "$ferry_pid" ]; then kill "$ferry_pid" 2>/dev/null || true; fi
  if [ -n "$daemon_pid" ]; then wait "$daemon_pid" 2>/dev/null || true; fi
  if [ -n "${writer_pid:-}" ]; then kill "$writer_pid" 2>/dev/null || true; fi
  rm -rf "$work"
  if [ "$started_servers" = 1 ]; then bash scripts/test-servers.sh stop; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/src"
for i in $(seq -w 1 50); do head -c 307200 /dev/urandom >"$work/src/file-$i.bin"; done

cat >"$work/ferry.toml" <<EOF
version = 1
[server]
bind = "127.0.0.1:0"
[stores.a]
url = "$work/repo-a"
[stores.b]
url = "$work/repo-b"
[[jobs]]
name = "push"
source = "$work/src"
layout = "tree"
ref = "soak"
targets = ["a"]
every = "1s"
settle = "2s"
[[jobs]]
name = "replicate"
from = "a"
targets = ["b"]
every = "1s"
EOF
if [ "$variant" = azure ]; then
  if ! eval "$(bash scripts/test-servers.sh env)" || ! curl -s -o /dev/null "$FERRY_TEST_AZURITE_URL"; then
    bash scripts/test-servers.sh start
    started_servers=1
    eval "$(bash scripts/test-servers.sh env)"
  fi
  export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=$FERRY_TEST_AZURITE_URL
  cat >>"$work/ferry.toml" <<EOF
[stores.az]
url = "az://ferry-test/soak-$(date +%s)-$$"
[[jobs]]
name = "replicate-azure"
from = "a"
targets = ["az"]
every = "1s"
EOF
fi

# shellcheck disable=SC2086 # the wrapper is a command line
${FERRY_SOAK_WRAP:-} "$bin" --index-dir "$work/index" daemon --config "$work/ferry.toml" 2>"$work/daemon.log" &
daemon_pid=$!
ferry_pid=$daemon_pid
addr=
for _ in $(seq 1 600); do
  addr=$(sed -n 's|.*dashboard on http://\([^/]*\)/.*|\1|p' "$work/daemon.log")
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$work/daemon.log" >&2; exit 1; }
# Behind a wrapper, sample the ferry process itself (not the wrapper).
if [ -n "${FERRY_SOAK_WRAP:-}" ]; then
  for p in $(pgrep -x ferry); do
    if tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF -- "--config $work/ferry.toml"; then ferry_pid=$p; fi
  done
fi

# One 300 KB file gets new bytes every 6 s (written aside, then renamed into place).
(
  n=0
  while sleep 6; do
    f=$(printf 'file-%02d.bin' $((n % 50 + 1)))
    head -c 307200 /dev/urandom >"$work/change.tmp" && mv "$work/change.tmp" "$work/src/$f"
    n=$((n + 1))
  done
) &
writer_pid=$!

runs() {
  curl -s "http://$addr/api/v1/jobs" | python3 -c '
import json, sys
jobs = json.load(sys.stdin)["jobs"]
print(sum(t["runs_succeeded"] + t["runs_failed"] + t["skipped"] for j in jobs for t in j["targets"]))'
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$ferry_pid/status"; }

echo "ferry daemon soak: $minutes min, variant $variant, ${MALLOC_ARENA_MAX:+MALLOC_ARENA_MAX=$MALLOC_ARENA_MAX, }$(nproc) cores"
printf '%8s %10s %8s\n' elapsed rss_mib runs
declare -A at
samples=$((minutes * 2))
printf '%8s %10.1f %8d\n' "0:00" "$(echo "$(rss_kib) / 1024" | bc -l)" "$(runs)"
for s in $(seq 1 "$samples"); do
  sleep 30
  kill -0 "$ferry_pid" || { echo "daemon exited" >&2; cat "$work/daemon.log" >&2; exit 1; }
  rss=$(rss_kib)
  at[$s]=$rss
  printf '%8s %10.1f %8d\n' "$((s / 2)):$([ $((s % 2)) = 1 ] && echo 30 || echo 00)" "$(echo "$rss / 1024" | bc -l)" "$(runs)"
done
if [ -n "${FERRY_SOAK_TRIM:-}" ]; then
  # Freed memory the allocator still holds vs memory in use: glibc's malloc_trim through gdb.
  before=$(rss_kib)
  gdb -p "$ferry_pid" -batch -ex 'call (int) malloc_trim(0)' >/dev/null 2>&1 || true
  echo "malloc_trim(0): RSS $((before / 1024)) MiB -> $(($(rss_kib) / 1024)) MiB"
fi
failed=$(grep -c '"run failed"\|run failed' "$work/daemon.log" || true)
echo "failed run attempts in the log: $failed"
if [ "$minutes" -ge 5 ]; then
  last=${at[$samples]}
  four=${at[8]}
  if [ "$last" -gt $((four * 12 / 10)) ] || [ "$last" -gt $((128 * 1024)) ]; then
    echo "FAIL: RSS $((last / 1024)) MiB at $minutes min; 4-min sample $((four / 1024)) MiB (bound: <= 1.2x and <= 128 MiB)" >&2
    exit 1
  fi
  echo "ok: RSS at $minutes min <= 1.2x the 4-min sample and <= 128 MiB"
fi
