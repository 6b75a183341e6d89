"""Tuning against real SQLite storage: kill -9 and resume, two processes on one study, failed trials, git logging."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from atf.memory import commit_summary, record_run
from atf.tuning import Pruned, check_space, tune

SCRIPT = textwrap.dedent("""
    import sys, time
    from atf.tuning import tune
    def slow(params, report):
        time.sleep(float(sys.argv[3]))
        return -(params["x"] - 1) ** 2
    r = tune(slow, {"x": {"type": "float", "low": -5, "high": 5}}, n_trials=int(sys.argv[2]),
             storage=sys.argv[1], study_name="shared", pruner="none", seed=int(sys.argv[4]))
    print("finished", len(r.trials))
""")


def finished(storage: str, name: str = "shared") -> list:
    study = optuna.load_study(study_name=name, storage=storage)
    return [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]


@pytest.fixture
def script(tmp_path) -> Path:
    p = tmp_path / "job.py"
    p.write_text(SCRIPT)
    return p


def test_killed_study_resumes_without_losing_trials(tmp_path, script):
    storage = f"sqlite:///{tmp_path / 'kill.db'}"
    proc = subprocess.Popen([sys.executable, str(script), storage, "40", "0.2", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            if len(finished(storage)) >= 5: break
        except KeyError:
            continue                                    # study not created yet
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: t.value for t in finished(storage)}
    assert 5 <= len(before) < 40
    res = subprocess.run([sys.executable, str(script), storage, "40", "0.0", "0"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    after = {t.number: t.value for t in finished(storage)}
    assert len(after) == 40 and all(after[k] == v for k, v in before.items())


def test_two_processes_share_one_study(tmp_path, script):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    procs = [subprocess.Popen([sys.executable, str(script), storage, "30", "0.02", str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    done = finished(storage)
    assert len(done) >= 30 and len({t.number for t in done}) == len(done)


def test_failures_and_nan_do_not_stop_the_study(tmp_path):
    calls = {"n": 0}

    def flaky(params, report):
        calls["n"] += 1
        if calls["n"] % 3 == 0: raise FloatingPointError("training loss became nan")
        if calls["n"] % 3 == 1: return float("nan")
        return params["x"]

    res = tune(flaky, {"x": {"type": "float", "low": 0, "high": 1}}, n_trials=5,
               storage=f"sqlite:///{tmp_path / 'f.db'}", study_name="flaky")
    assert res.counts.get("COMPLETE") + res.counts.get("PRUNED", 0) >= 5 and res.counts.get("FAIL", 0) >= 1


def test_patience_stops_a_study_that_stopped_improving(tmp_path):
    res = tune(lambda p, r: 1.0, {"x": [1, 2, 3]}, n_trials=50, patience=4,
               storage=f"sqlite:///{tmp_path / 'p.db'}", study_name="flat")
    assert res.stopped_by == "no improvement in 4 trials" and len(res.trials) == 5


def test_time_budget(tmp_path):
    t0 = time.time()
    res = tune(lambda p, r: time.sleep(0.2) or p["x"], {"x": {"type": "float", "low": 0, "high": 1}}, n_trials=1000,
               timeout=2, storage=f"sqlite:///{tmp_path / 'b.db'}", study_name="budget")
    assert time.time() - t0 < 10 and res.stopped_by.startswith("time budget") and len(res.trials) < 1000


def test_pruned_is_backend_free():
    assert not issubclass(Pruned, optuna.TrialPruned)
    with pytest.raises(ValueError, match=r"space\['w'\]: unknown key\(s\) \['choice'\]"):
        check_space({"w": {"type": "categorical", "choice": [1]}})


def test_summary_commit_touches_nothing_else(tmp_path):
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    git("init", "-q"); git("config", "user.email", "t@example.com"); git("config", "user.name", "t")
    (tmp_path / "other.txt").write_text("work in progress\n")
    git("add", "other.txt")                                          # staged, must stay out of the commit
    md = record_run("study-1", "tuning", {"best_value": 1.23, "best_params": {"lr": 0.01}}, bank=tmp_path / "memory_bank")
    sha = commit_summary([md, tmp_path / "memory_bank" / "runs.jsonl"], "Record tuning study-1", repo=tmp_path)
    files = git("show", "--name-only", "--format=", sha).split()
    assert files == ["memory_bank/runs.jsonl", "memory_bank/runs/study-1.md"]
    assert "A  other.txt" in git("status", "--porcelain")


def test_dashboard_serves_a_real_study(tmp_path):
    "`atf dashboard` starts optuna-dashboard on 127.0.0.1 and its API lists the study."
    import socket
    import httpx
    storage_file = tmp_path / "dash.db"
    tune(lambda p, r: p["x"], {"x": {"type": "float", "low": 0, "high": 1}}, n_trials=3,
         storage=f"sqlite:///{storage_file}", study_name="dash-study")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    atf = str(Path(sys.executable).parent / "atf")
    proc = subprocess.Popen([atf, "dashboard", str(storage_file), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.time() + 60, None
        while time.time() < deadline and body is None:
            try: body = httpx.get(f"http://127.0.0.1:{port}/api/studies", timeout=2).json()
            except httpx.HTTPError: time.sleep(0.5)
        assert body is not None, proc.stdout.read1(4000) if proc.poll() is not None else "no answer"
        names = [s["study_name"] for s in body["study_summaries"]]
        assert names == ["dash-study"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_the_same_error_in_a_row_stops_the_study_naming_it(tmp_path, caplog):
    "A study whose every trial crashes alike is broken: 5 trials, then TrialsFailing with the error and params, one log line each."
    from atf.tuning import TrialsFailing
    def broken(params, report): raise TypeError("MLP.__init__() got an unexpected keyword argument 'hiden'")
    with pytest.raises(TrialsFailing, match=r"5 trials in a row failed with TypeError: MLP.__init__\(\) got an unexpected "
                                            r"keyword argument 'hiden' \(last params \{'lr'"):
        tune(broken, {"lr": [0.1, 0.01]}, n_trials=1000, storage=f"sqlite:///{tmp_path / 'f.db'}", study_name="broken")
    lines = [r for r in caplog.records if r.name == "atf.tuning" and "failed" in r.getMessage()]
    assert len(lines) == 5 and all("\n" not in r.getMessage() and r.exc_info is None for r in lines)
    calls = iter(range(100))
    def flaky(params, report):                                     # different errors, and successes between: not broken
        n = next(calls)
        if n % 3 == 0: raise ValueError(f"bad draw {n}")
        return float(n)
    res = tune(flaky, {"lr": [0.1, 0.01]}, n_trials=12, storage=f"sqlite:///{tmp_path / 'g.db'}", study_name="flaky")
    assert res.counts["COMPLETE"] == 12 and res.counts["FAIL"] >= 5
