"""The papermill workflow notebooks refuse a parameter they do not declare, or of the wrong type, before any work."""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

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
    (["-p", "asset", "MSFT", "-p", "model", "tcn", "-p", "max_epoch", "2"], "unknown parameter 'max_epoch' (did you mean 'max_epochs'?)"),
    (["-p", "executor", "proceses"], "parameter executor: 'proceses' not in ['serial', 'processes', 'ray'] (did you mean 'processes'?)")])
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


TINY_WF = ["-p", "n_trials", "1", "-p", "max_epochs", "1", "-p", "end", "2007-12-31", "-p", "train", "200",
           "-p", "validation", "60", "-p", "test", "100"]       # two folds of AAPL: seconds of work


def test_walk_forward_runs_its_folds_in_processes_with_the_default_results(tmp_path):
    "`-p executor processes` overrides execution.executor; where the folds run changes nothing in the report."
    runs = {}
    for executor in (None, "processes"):
        run_id = executor or "default"
        res, seconds = papermill("walk_forward", tmp_path / f"{run_id}.ipynb", *TINY_WF, "-p", "output_dir", str(tmp_path),
                                 "-p", "run_id", run_id, *(["-p", "executor", executor] if executor else []))
        assert res.returncode == 0, res.stderr[-3000:]
        runs[run_id] = tmp_path / run_id
    for run_id, executor in (("default", "serial"), ("processes", "processes")):
        assert yaml.safe_load((runs[run_id] / "config.yaml").read_text())["execution"]["executor"] == executor
    for name in ("metrics.csv", "folds.csv", "oos_AAPL_native.csv"):
        assert (runs["processes"] / name).read_text() == (runs["default"] / name).read_text(), name
    assert len(pd.read_csv(runs["default"] / "folds.csv")) >= 2                      # folds enough for the pool to share


@pytest.mark.parametrize("wf", ["walk_forward", "rl_walk_forward"])
def test_a_misspelt_executor_stops_the_workflow_in_the_parameter_check(wf, tmp_path):
    res, seconds = papermill(wf, tmp_path / "out.ipynb", "-p", "executor", "proceses", "-p", "output_dir", str(tmp_path / "runs"))
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == ("ConfigError: parameter executor: 'proceses' not in "
                                                   "['serial', 'processes', 'ray'] (did you mean 'processes'?)")
    assert executed_after_check(tmp_path / "out.ipynb") == [] and not (tmp_path / "runs").exists()


def test_an_address_needs_executor_ray_before_any_fold(tmp_path):
    "As `atf experiment --address` without --executor ray: check_scale names execution.address before the first fold."
    res, _ = papermill("walk_forward", tmp_path / "out.ipynb", "-p", "address", "127.0.0.1:1", "-p", "output_dir", str(tmp_path / "runs"))
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1].startswith("ConfigError: execution.address: ")    # check_scale's own words
    assert not (tmp_path / "runs").exists()
