"""The papermill workflow notebooks refuse a parameter they do not declare, or of the wrong type, before any work."""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOWS = ["tune", "walk_forward", "rl_walk_forward"]


def papermill(wf, out, *params, timeout=300):
    t0 = time.time()
    res = subprocess.run([str(BIN / "papermill"), "--cwd", str(ROOT), str(ROOT / "nbs" / "workflows" / f"{wf}.ipynb"),
                          str(out), *params], capture_output=True, text=True, timeout=timeout)
    return res, time.time() - t0


def executed_after_check(nb_path):
    "Code cells after the parameter check that ran (had an execution count)."
    cells = [c for c in json.loads(Path(nb_path).read_text())["cells"] if c["cell_type"] == "code"]
    i = next(k for k, c in enumerate(cells) if "".join(c["source"]).startswith("check_workflow_parameters("))
    return [c for c in cells[i + 1:] if c.get("execution_count")]


@pytest.mark.parametrize("wf", WORKFLOWS)
def test_papermill_refuses_an_unknown_parameter_before_any_work(wf, tmp_path):
    res, seconds = papermill(wf, tmp_path / "out.ipynb", "-p", "assett", "MSFT", "-p", "output_dir", str(tmp_path / "runs"))
    assert res.returncode != 0, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == "ConfigError: unknown parameter 'assett' (did you mean 'asset'?)"
    assert seconds < 60, seconds                                       # kernel start and the check: no trial ran
    assert executed_after_check(tmp_path / "out.ipynb") == [] and not (tmp_path / "runs").exists()


def test_papermill_refuses_a_parameter_of_the_wrong_type(tmp_path):
    res, _ = papermill("tune", tmp_path / "out.ipynb", "-p", "n_trials", "five", "-p", "output_dir", str(tmp_path / "runs"))
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == "ConfigError: parameter n_trials: expected int, got 'five'"
    assert executed_after_check(tmp_path / "out.ipynb") == [] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("params, message", [
    (["-p", "assett", "MSFT"], "unknown parameter 'assett' (did you mean 'asset'?)"),
    (["-p", "n_trials", "five"], "parameter n_trials: expected int, got 'five'"),
    (["-p", "asset", "MSFT", "-p", "model", "tcn", "-p", "max_epoch", "2"], "unknown parameter 'max_epoch' (did you mean 'max_epochs'?)")])
def test_run_workflows_refuses_in_one_line_before_any_notebook(params, message):
    suffix = f"test-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    res = subprocess.run(["scripts/run-workflows.sh", suffix, "--", *params], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={"PATH": f"{BIN}:/usr/bin:/bin", "BIN": str(BIN)})
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.stderr.strip() == f"run-workflows: error: {message}" and "papermill:" not in res.stdout
    assert time.time() - t0 < 60 and not list((ROOT / "reports").glob(f"*-{suffix}"))


def test_tune_workflow_runs_a_tcn(tmp_path):
    "The search space comes from the learner: `-p model tcn` no longer fails every trial on `hidden`."
    res, _ = papermill("tune", tmp_path / "out.ipynb", "-p", "model", "tcn", "-p", "n_trials", "2", "-p", "max_epochs", "1",
                       "-p", "output_dir", str(tmp_path), "-p", "run_id", "tcn", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    trials = optuna.load_study(study_name="tune-MSFT", storage=f"sqlite:///{tmp_path / 'tcn' / 'optuna.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert {"channels", "kernel"} <= set(trials[0].params) and "hidden" not in trials[0].params
