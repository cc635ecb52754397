#!/usr/bin/env bash
# The seams ARCHITECTURE.md promises, checked mechanically (issue 13): only src/store/ reaches
# the object_store client, errors stay typed outside main.rs, the daemon does not call the CLI
# layer, and no source file outside tests grows past 600 lines.
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
check "source files over 600 lines (tests.rs aside)" bash -c "find src -name '*.rs' ! -name 'tests.rs' ! -name 'tests_*.rs' -print0 | xargs -0 wc -l | awk '\$2 != \"total\" && \$1 > 600'"
exit $fail
