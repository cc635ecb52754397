#!/usr/bin/env bash
# The seams ARCHITECTURE.md promises, checked mechanically (issue 13): only src/store/ reaches
# the object_store client, errors stay typed outside main.rs, the daemon does not call the CLI
# layer, settings are read from the environment only at the edge, progress is passed
# explicitly (no task-locals), and no source file outside
# tests grows past 600 lines.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
check() { # description, command printing offenders
  local what=$1; shift
  local out
  out=$("$@" || true)
  if [ -n "$out" ]; then
    echo "check-seams: $what:" >&2
    echo "$out" >&2
    fail=1
  fi
}
check ".object_store() outside src/store/" bash -c "grep -rn '\.object_store()' src | grep -v '^src/store/'"
check "Result<_, String> outside src/main.rs" bash -c "grep -rnE 'Result<[^;{]*, *String>' src --include=*.rs | grep -v '^src/main.rs'"
check "the daemon calls the CLI layer (commands::)" bash -c "grep -rln 'commands::' src/daemon"
# Settings come from the environment once, at the edge (`app::Settings::from_env`, the config's
# `Env::from_process`), and are passed down; the backends' own builders read AWS_*/AZURE_*/GOOGLE_*.
check "the process environment read below the edge" bash -c "grep -rlE 'std::env::var|env::vars\(' src --include=*.rs | grep -vE '^src/(main|main_args|app/settings)\.rs$|/tests(_[a-z_]+)?\.rs$|^src/store/(options\.rs|s3/|azure/|gcs/)|^src/mirror/mod\.rs$|^src/config/validate\.rs$|^src/memory\.rs$'"
# ARCHITECTURE.md's invariants that a grep can hold: only src/index/ speaks sled; only
# src/store/ tells the clouds apart; anyhow only in main.rs, demo.rs and tests; the chunker
# does no I/O of its own.
check "sled outside src/index/" bash -c "grep -rlE '\bsled::|use sled' src --include=*.rs | grep -v '^src/index/'"
check "a cloud matched outside src/store/" bash -c "grep -rnE 'StoreUrl::(S3|Azure|Gcs)' src --include=*.rs | grep -v '^src/store/'"
check "anyhow outside main.rs, demo.rs and tests" bash -c "grep -rn 'anyhow' src --include=*.rs | grep -vE '^src/[^:]+:[0-9]+: *//' | grep -vE '^src/(main|main_tests|demo)\.rs:|/tests(_[a-z_]+)?\.rs:'"
# Progress is passed explicitly from the edge (`progress::Reporter`), not through task-locals.
check "a task-local outside tests" bash -c "grep -rn 'task_local!' src --include=*.rs | grep -vE '/tests(_[a-z_]+)?\.rs:'"
check "I/O in the chunker" bash -c "grep -rnE 'std::fs|std::net|tokio|object_store' src/chunker"
check "source files over 600 lines (tests.rs aside)" bash -c "find src -name '*.rs' ! -name 'tests.rs' ! -name 'tests_*.rs' -print0 | xargs -0 wc -l | awk '\$2 != \"total\" && \$1 > 600'"
exit $fail
