#!/usr/bin/env bash
# Execute the parameterised workflow notebooks with papermill into reports/<run-id>/ and render them to HTML.
# Usage: scripts/run-workflows.sh [RUN_SUFFIX] [-- extra papermill args, applied to both]
# Without extra args the notebooks' own CI-sized defaults are used (what `make test` runs).
set -euo pipefail
BIN=${BIN:-.venv/bin}
suffix=${1:-$(date -u +%Y%m%dT%H%M%SZ)}; shift || true
[ "${1:-}" = "--" ] && shift
for wf in tune walk_forward rl_walk_forward; do
  run_id="${wf//_/-}-${suffix}"
  out="reports/${run_id}"
  mkdir -p "$out"
  echo "papermill: nbs/workflows/${wf}.ipynb -> ${out}/${wf}.ipynb"
  "$BIN/papermill" --cwd . --log-level WARNING "nbs/workflows/${wf}.ipynb" "${out}/${wf}.ipynb" \
      -p output_dir reports -p run_id "$run_id" "$@"
  grep -q '"injected-parameters"' "${out}/${wf}.ipynb" || { echo "FAIL: papermill injected no parameters into ${wf}" >&2; exit 1; }
  "$BIN/jupyter" nbconvert --log-level WARN --to html "${out}/${wf}.ipynb" --output "${wf}.html"
  test -s "${out}/${wf}.html"
done
for wf in walk-forward rl-walk-forward; do
  test -s "reports/${wf}-${suffix}/run.json" || { echo "FAIL: the ${wf} run wrote no report" >&2; exit 1; }
done
echo "workflows: executed notebooks and HTML under reports/*-${suffix}/"
