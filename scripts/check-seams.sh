#!/usr/bin/env bash
# The seams ARCHITECTURE.md promises, checked mechanically (issue 13): only src/store/ reaches
# the object_store client, errors stay typed outside main.rs, the daemon does not call the CLI
# layer, settings are read from the environment only at the edge, and no source file outside
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
# `Env::from_process`), and are passed down; the backends' own builders read AWS_*/AZURE_*.
check "the process environment read below the edge" bash -c "grep -rlE 'std::env::var|env::vars\(' src --include=*.rs | grep -vE '^src/(main|main_args)\.rs$|/tests(_[a-z_]+)?\.rs$|^src/store/(options\.rs|s3/|azure/)|^src/mirror/mod\.rs$|^src/config/validate\.rs$|^src/memory\.rs$'"
check "source files over 600 lines (tests.rs aside)" bash -c "find src -name '*.rs' ! -name 'tests.rs' ! -name 'tests_*.rs' -print0 | xargs -0 wc -l | awk '\$2 != \"total\" && \$1 > 600'"
exit $fail
