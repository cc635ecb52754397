#!/usr/bin/env bash
# Builds the ferry image from docker/Dockerfile with podman and proves it runs: `ferry
# --version`, then the daemon with config/local.toml as a non-root user on a read-only root
# file system, its /healthz and /metrics checked from outside the container.
#
# No registry is reachable from CI, so nothing is pulled: the runtime stage's base is a Debian
# bookworm root file system made with debootstrap from the Debian archive and imported as
# localhost/ferry-base:bookworm (cached between runs), and the binary is the optimised build of
# this checkout (BINARY=prebuilt; the bench profile, which is the release profile) or, with
# FERRY_IMAGE_BINARY (as in CI), a binary already built. Installs
# podman, runc and debootstrap with apt when missing.
#
# This machine's containers: cgroup v1/v2 hybrid (crun refuses it: runc is used) and no
# CAP_SYS_RESOURCE (podman's default raised rlimits are refused: they are lowered explicitly).
# Usage: scripts/image.sh            FERRY_DEBIAN_MIRROR overrides the archive URL;
#   FERRY_IMAGE_BINARY=PATH puts that ferry binary in the image instead of building release.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
log() { echo "image: $*" >&2; }
BASE=localhost/ferry-base:bookworm
IMAGE=localhost/ferry:ci
NAME=ferry-image-check
PORT=7878
MIRROR=${FERRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUN_OPTS=(--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "missing ${need[*]}: apt-get install ${need[*]}"; exit 1; }
  log "installing ${need[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

if ! podman image exists "$BASE"; then
  rootfs=$(mktemp -d)
  log "debootstrap bookworm (minbase + ca-certificates) from $MIRROR"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 ||
    { tail -20 "$rootfs.log" >&2; exit 1; }
  tar -C "$rootfs" -c . | podman import --quiet - "$BASE" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
fi

# The build context: the Dockerfile and the binary only (what the prebuilt stage copies).
ctx=$(mktemp -d)
mkdir -p "$ctx/docker" "$ctx/target/release"
if [ -n "${FERRY_IMAGE_BINARY:-}" ]; then
  cp "$FERRY_IMAGE_BINARY" "$ctx/target/release/ferry"
else
  # The bench profile is the release profile (it inherits it; Cargo.toml sets nothing of its
  # own for it) and writes to the same target/release, so a `cargo bench` leaves it warm.
  log "cargo build --profile bench --locked --bin ferry (= release settings)"
  cargo build --profile bench --locked --bin ferry
  cp "${CARGO_TARGET_DIR:-target}/release/ferry" "$ctx/target/release/ferry"
fi
cp docker/Dockerfile "$ctx/docker/Dockerfile"
log "podman build (BINARY=prebuilt, RUNTIME_BASE=$BASE)"
podman build "${RUN_OPTS[@]}" --quiet --pull=never -f docker/Dockerfile \
  --build-arg BINARY=prebuilt --build-arg RUNTIME_BASE="$BASE" -t "$IMAGE" "$ctx" >/dev/null
rm -rf "$ctx"

version=$(podman run "${RUN_OPTS[@]}" --rm "$IMAGE" --version)
want="ferry $(sed -nE 's/^version *= *"([^"]+)"/\1/p' Cargo.toml | head -1)"
[ "$version" = "$want" ] || { log "ferry --version printed '$version', expected '$want'"; exit 1; }
log "ferry --version in the image: $version"

work=$(mktemp -d)
cleanup() { podman rm -f "$NAME" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/state/ferry-local/checkpoints"
chown -R 10001:10001 "$work/state"
podman rm -f "$NAME" >/dev/null 2>&1 || true
# --network host: the daemon binds 127.0.0.1:7878 as config/local.toml says, and the checks
# below reach it from the host. Read-only root; the only writable place is the state volume.
podman run "${RUN_OPTS[@]}" -d --name "$NAME" --network host --read-only --user 10001:10001 \
  --cap-drop ALL --security-opt no-new-privileges \
  -v "$root/config/local.toml:/etc/ferry/ferry.toml:ro" -v "$work/state:/var/lib/ferry" \
  "$IMAGE" daemon --config /etc/ferry/ferry.toml >/dev/null

get() { python3 - "$1" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    sys.stdout.write(r.read().decode())
PY
}
for _ in $(seq 1 100); do
  if get "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then break; fi
  if [ "$(podman inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" != true ]; then
    podman logs "$NAME" >&2 || true; log "the daemon exited"; exit 1
  fi
  sleep 0.2
done
health=$(get "http://127.0.0.1:$PORT/healthz") || { podman logs "$NAME" >&2; log "/healthz did not answer"; exit 1; }
metrics=$(get "http://127.0.0.1:$PORT/metrics")
grep -q '^ferry_' <<<"$metrics" || { log "/metrics has no ferry_ series"; exit 1; }
user=$(podman exec "$NAME" /usr/local/bin/ferry --version >/dev/null && podman top "$NAME" user | tail -1 | tr -d ' ')
[ "$user" = 10001 ] || [ "$user" = ferry ] || { log "the daemon runs as '$user', not 10001"; exit 1; }
# Even root inside the container cannot write the root file system.
[ "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$NAME")" = true ] ||
  { log "the container's root file system is not read-only"; exit 1; }
if podman exec --user 0 "$NAME" /usr/local/bin/ferry init file:///probe-repo >/dev/null 2>&1; then
  log "the root file system is writable"; exit 1
fi
log "daemon in the image: /healthz '${health//$'\n'/ }', /metrics $(grep -c '^ferry_' <<<"$metrics") ferry_ samples, user $user, read-only root"
