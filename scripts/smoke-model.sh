#!/usr/bin/env bash
# Print the path of an exported model for the container and deploy tests, training it only when the code changed.
# Usage: scripts/smoke-model.sh [--help]
# The model is a run of configs/serve_smoke.yaml (IBM, a small MLP), exported with `atf export`, kept under
# reports/serve-smoke-<key>/models/IBM_native where <key> hashes that config, atf/ and the pinned versions: the
# `make test` steps that serve a model (pytest's fetch-model tests, test-container, test-deploy) share one training and
# export. Concurrent calls (pytest -n 2) wait on a lock: one trains, the others reuse.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0 ;; "") ;; *) echo "smoke-model: no arguments (see --help)" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/.venv/bin}
key=$( { cat configs/serve_smoke.yaml requirements/constraints.txt; find atf -name '*.py' -print0 | sort -z | xargs -0 cat; } \
       | sha256sum | cut -c1-12)
run_id=serve-smoke-$key
model=reports/$run_id/models/IBM_native
mkdir -p reports
exec 9>reports/.serve-smoke.lock
flock 9
if [ ! -f "$model/manifest.json" ]; then
  rm -rf "reports/$run_id"                                 # a half-made run of an earlier, interrupted call
  "$BIN/atf" experiment configs/serve_smoke.yaml --run-id "$run_id" -q >/dev/null
  "$BIN/atf" export "reports/$run_id" >/dev/null
  test -f "$model/manifest.json" || { echo "smoke-model: export of reports/$run_id made no $model/manifest.json" >&2; exit 1; }
fi
echo "$model"
