"""Scaling out for real: fold tasks on a multi-node Ray cluster (two `ray start` processes on this machine), a worker
node killed mid-run, a driver killed mid-run and resumed from the fold-task cache; every result equal to a serial run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from atf.config import ConfigError
from atf.experiments import load_experiment, run_experiment

ATF = str(Path(sys.executable).with_name("atf"))
# two assets x three folds = six fold tasks; small budgets, but each takes seconds, so a kill lands mid-run
CONFIG = {"name": "scale", "data": {"dataset": "us_stocks", "assets": ["MSFT", "IBM"], "start": "2004-01-01",
                                    "end": "2008-12-31"},
          "model": {"name": "mlp", "window": 5, "params": {"hidden": 8}},
          "train": {"max_epochs": 3, "patience": 2, "batch_size": 128},
          "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}, "hidden": [8, 16]},
          "tuning": {"n_trials": 2, "metric": "sharpe", "pruner": "none"},
          "walk_forward": {"train": 500, "validation": 200, "test": 250}, "tearsheet": False, "memory_bank": None}


def outcome(run: Path) -> dict:
    "What must not depend on where the fold tasks ran: the out-of-sample returns and positions, and the folds' choices."
    oos = {p.name: pd.read_csv(p, index_col=0) for p in sorted(run.glob("oos_*.csv"))}
    folds = pd.read_csv(run / "folds.csv")[["asset", "timeframe", "fold", "best_params", "best_validation", "test_return"]]
    return {"oos": oos, "folds": folds}


def assert_same(a: dict, b: dict) -> None:
    assert a["oos"].keys() == b["oos"].keys() and len(a["oos"]) == 2
    for k in a["oos"]: pd.testing.assert_frame_equal(a["oos"][k], b["oos"][k], check_exact=True)
    pd.testing.assert_frame_equal(a["folds"], b["folds"], check_exact=True)


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory) -> dict:
    "The reference: the config run serially in this process."
    out = tmp_path_factory.mktemp("serial")
    return outcome(run_experiment(load_experiment({**CONFIG, "output_dir": str(out)}), run_id="ref", progress=False))


def config_file(folder: Path) -> Path:
    p = folder / "scale.yaml"
    p.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(folder / "reports")}, sort_keys=False))   # key order: draw order
    return p


def start(cfg: Path, run_id: str, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([ATF, "experiment", str(cfg), "--run-id", run_id, "-q", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def wait_until(check, what: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while not check():
        if proc.poll() is not None: raise AssertionError(f"run ended before {what}: {proc.stdout.read()[-3000:]}")
        if time.time() - t0 > timeout: raise AssertionError(f"no {what} after {timeout}s")
        time.sleep(0.2)


def test_executor_and_backend_mistakes_are_one_line():
    cases = [({"execution": {"executor": "process"}}, "did you mean 'processes'"),
             ({"execution": {"executor": "ray", "cpus": 0}}, "execution.cpus"),
             ({"execution": {"executor": "serial", "address": "127.0.0.1:6379"}}, "execution.address"),
             ({"execution": {"executor": "processes", "gpus": 1}}, "execution.gpus"),
             ({"tuning": {"n_workers": 0}}, "tuning.n_workers"), ({"tuning": {"backend": "hyperopt"}}, "tuning.backend"),
             ({"tuning": {"storage": "postgres-ql://x"}}, "tuning.storage"), ({"tuning": {"storage": "sqlite://"}}, "in-memory"),
             ({"tuning": {"backend": "ray_tune"}, "execution": {"executor": "processes"}}, "use it with execution.executor serial"),
             ({"tuning": {"n_workers": 2}, "execution": {"executor": "processes"}}, "choose one of the two"),
             ({"tuning": {"n_workers": 2}, "execution": {"executor": "ray"}}, "execution.cpus")]
    for change, key in cases:
        with pytest.raises(ConfigError, match=key) as e: load_experiment({**CONFIG, **change})
        assert "\n" not in str(e.value), str(e.value)


def test_relative_storage_files_are_made_absolute_from_the_config_folder(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({**CONFIG, "tuning": {**CONFIG["tuning"], "storage": "journal:studies/s.log"}}, sort_keys=False))
    assert load_experiment(p).tuning.storage == f"journal:{tmp_path.resolve()}/studies/s.log"


@pytest.mark.xdist_group("ray")
def test_multinode_cluster_survives_a_killed_worker_node(ray_cluster, serial_run, tmp_path):
    "An experiment on a head node plus a worker node through --address; the worker node dies mid-task; same results."
    node = ray_cluster.add_node(cpus=1)
    proc = start(config_file(tmp_path), "cluster", "--executor", "ray", "--address", ray_cluster.address)
    wait_until(lambda: node.running("ray::_in_ray_worker") > 0, "fold task on the worker node", proc)
    node.kill()                                              # the node and the fold task running on it are gone
    assert proc.wait(600) == 0, proc.stdout.read()[-3000:]
    assert_same(outcome(tmp_path / "reports" / "cluster"), serial_run)


@pytest.mark.xdist_group("ray")
def test_killed_driver_resumes_from_cached_fold_tasks(ray_cluster, serial_run, tmp_path):
    "Kill the driver once a fold task has finished; rerun with the same --run-id: finished ones are read back, not run again."
    cfg, run = config_file(tmp_path), tmp_path / "reports" / "resume"
    cached = lambda: sorted((run / "tasks").glob("*.pkl"))
    proc = start(cfg, "resume", "--executor", "ray", "--address", ray_cluster.address)
    wait_until(lambda: len(cached()) >= 1, "a cached fold task", proc)
    proc.send_signal(signal.SIGKILL); proc.wait(60)
    before = {p.name: p.stat().st_mtime_ns for p in cached()}
    assert 1 <= len(before) < len(serial_run["folds"]) and not (run / "run.json").exists()
    proc = start(cfg, "resume", "--executor", "ray", "--address", ray_cluster.address)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-3000:]
    assert f"{len(before)} of " in log and "from the cache" in log, log[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in cached() if p.name in before} == before   # not recomputed
    assert len(cached()) == len(serial_run["folds"])
    assert_same(outcome(run), serial_run)


def test_resuming_with_another_config_is_refused(tmp_path):
    out = tmp_path / "reports"
    cfg = load_experiment({**CONFIG, "data": {**CONFIG["data"], "assets": ["IBM"]}, "output_dir": str(out), "tuning": {"n_trials": 1}})
    from atf.experiments import begin_run
    from atf.data import data_record
    from atf.config import data_source
    data = data_record(data_source(cfg.data), cfg.data.assets, cfg.data.repairs)
    begin_run(out / "r", cfg, data)
    begin_run(out / "r", load_experiment({**CONFIG, "data": {**CONFIG["data"], "assets": ["IBM"]}, "output_dir": str(out),
                                          "tuning": {"n_trials": 1}, "execution": {"executor": "processes"}}), data)   # where it runs may change
    changed = load_experiment({**CONFIG, "data": {**CONFIG["data"], "assets": ["IBM"]}, "output_dir": str(out), "tuning": {"n_trials": 2}})
    with pytest.raises(ConfigError, match=r"another config \(differs in \['tuning'\]\)"): begin_run(out / "r", changed, data)


def test_task_hash_follows_what_decides_the_result():
    "The cache key changes with the config, the asset and the fold; not with where the task runs (but with a GPU)."
    from atf.experiments import fold_tasks
    base = load_experiment({**CONFIG, "data": {**CONFIG["data"], "assets": ["IBM"]}})
    tasks = fold_tasks(base, "IBM", "native", Path("/tmp/unused"))
    assert len({t.hash for t in tasks}) == len(tasks) >= 2                       # each fold its own
    same = load_experiment({**CONFIG, "data": {**CONFIG["data"], "assets": ["IBM"]}, "execution": {"executor": "processes", "workers": 2}})
    assert [t.hash for t in fold_tasks(same, "IBM", "native", Path("/tmp/elsewhere"))] == [t.hash for t in tasks]
    for change in ({"seed": 1}, {"tuning": {**CONFIG["tuning"], "n_trials": 3}}, {"costs": {"fee_bps": 1}},
                   {"execution": {"executor": "ray", "gpus": 0.5}}):
        other = load_experiment({**CONFIG, "data": {**CONFIG["data"], "assets": ["IBM"]}, **change})
        assert fold_tasks(other, "IBM", "native", Path("/tmp/unused"))[0].hash != tasks[0].hash, change
