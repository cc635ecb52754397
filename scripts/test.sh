#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration binary (against file://, an S3 server,
# Azurite and fake-gcs-server, plus the dashboard in headless Chromium) and a compile of the
# benches. Starts the storage servers and stops them on exit.
# Usage: scripts/test.sh [args passed to `cargo test`, e.g. -- --nocapture]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fetch
# The dashboard's browser test drives headless Chromium through chromedriver (Debian packages).
if ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing chromium and chromium-driver (apt)" >&2
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
  else
    echo "test.sh: chromedriver is missing: apt-get install chromium chromium-driver" >&2
    exit 1
  fi
fi
export FERRY_REQUIRE_BROWSER=1
trap 'bash scripts/test-servers.sh stop' EXIT
bash scripts/test-servers.sh start
eval "$(bash scripts/test-servers.sh env)"
# Without this, integration tests whose server is missing are skipped instead of failing.
export FERRY_REQUIRE_SERVERS=1
cargo test --all-targets "$@"
