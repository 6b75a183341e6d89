#!/usr/bin/env bash
# Execute the parameterised workflow notebooks with papermill into reports/<run-id>/ and render them to HTML.
# Usage: scripts/run-workflows.sh [RUN_SUFFIX] [-- papermill parameters: -p NAME VALUE, -r NAME TEXT, -y YAML, -f FILE]
# Without parameters the notebooks' own CI-sized defaults are used (what `make test` runs). The same parameters go to
# every workflow: a name no workflow declares, a value of the wrong type or a misspelt choice (-p executor proceses)
# stops the script in one line before any notebook runs; a name only some workflows declare (e.g. model, not in the
# RL one; executor and address, not in tune) goes only to those.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0 ;; -*) [ "$1" = -- ] || { echo "run-workflows: unknown option '$1' (see --help)" >&2; exit 2; } ;; esac
BIN=${BIN:-.venv/bin}
suffix=$(date -u +%Y%m%dT%H%M%SZ)                       # the run-id suffix: the first argument, unless it is --
if [ $# -gt 0 ] && [ "$1" != -- ]; then [ -z "$1" ] || suffix=$1; shift; fi
[ "${1:-}" = "--" ] && shift
workflows=(tune walk_forward rl_walk_forward)
prepared=$(mktemp -d); trap 'rm -rf "$prepared"' EXIT
"$BIN/python" - "$prepared" "$suffix" "${workflows[@]}" -- "$@" <<'PY'    # checked before any notebook runs
import sys
import click
from papermill.cli import papermill
from atf.config import ConfigError
from atf.workflows import route_parameters
prepared, suffix, *rest = sys.argv[1:]
workflows, args = rest[:rest.index("--")], rest[rest.index("--") + 1:]
paths = [f"{prepared}/{wf}.ipynb" for wf in workflows]
try:
    for wf, path in zip(workflows, paths):      # papermill's own parsing injects the parameters: no kernel, no work
        papermill.main(["--log-level", "ERROR", "--prepare-only", f"nbs/workflows/{wf}.ipynb", path, "-p", "output_dir",
                        "reports", "-p", "run_id", f"{wf.replace('_', '-')}-{suffix}", *args], standalone_mode=False)
    dropped = route_parameters(paths)
except (ConfigError, click.ClickException) as e:
    print(f"run-workflows: error: {e.format_message() if isinstance(e, click.ClickException) else e}", file=sys.stderr)
    sys.exit(2)
for wf, names in dropped.items():
    if names: print(f"{wf}: not its parameter(s), left out: {', '.join(names)}")
PY
for wf in "${workflows[@]}"; do
  run_id="${wf//_/-}-${suffix}"
  out="reports/${run_id}"
  mkdir -p "$out"
  echo "papermill: nbs/workflows/${wf}.ipynb -> ${out}/${wf}.ipynb"
  "$BIN/papermill" --cwd . --log-level WARNING "${prepared}/${wf}.ipynb" "${out}/${wf}.ipynb"
  grep -q '"injected-parameters"' "${out}/${wf}.ipynb" || { echo "FAIL: papermill injected no parameters into ${wf}" >&2; exit 1; }
  "$BIN/jupyter" nbconvert --log-level WARN --to html "${out}/${wf}.ipynb" --output "${wf}.html"
  test -s "${out}/${wf}.html"
done
for wf in walk-forward rl-walk-forward; do
  test -s "reports/${wf}-${suffix}/run.json" || { echo "FAIL: the ${wf} run wrote no report" >&2; exit 1; }
done
echo "workflows: executed notebooks and HTML under reports/*-${suffix}/"
