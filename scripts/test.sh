#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration binary (against file://, an S3 server
# and Azurite) and a compile of the benches. Starts the storage servers and stops them on exit.
# Usage: scripts/test.sh [args passed to `cargo test`, e.g. -- --nocapture]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fetch
trap 'bash scripts/test-servers.sh stop' EXIT
bash scripts/test-servers.sh start
eval "$(bash scripts/test-servers.sh env)"
# Without this, integration tests whose server is missing are skipped instead of failing.
export FERRY_REQUIRE_SERVERS=1
cargo test --all-targets "$@"
