"""Several worker processes on one study, on each storage atf supports: JournalFile, SQLite and a real PostgreSQL 15.

Every call of the objective appends its process id and parameter to a file; the study must hold exactly those calls
as its complete trials (none lost, none counted twice), numbered 0..N-1, none left RUNNING, and at least `n_trials`
finished with an overshoot below the number of workers.
"""
import os
import signal
import time
from collections import Counter

import optuna
import pytest

from atf.tuning import PICKLE_HINT, TrialsFailing, check_storage, open_storage, tune
from pg_cluster import MISSING, PgCluster

SPACE = {"x": {"type": "float", "low": -5, "high": 5}}


def record_call(params, report):
    "A cheap objective that leaves a trace of each call: `pid x` appended to the file in params['log']."
    time.sleep(0.1)                          # long enough that every worker gets trials
    with open(params["log"], "a") as f: f.write(f"{os.getpid()} {params['x']!r}\n")
    return -(params["x"] - 1) ** 2


def dies_once(params, report):
    "Kills its own process (kill -9) the first time it runs, then behaves as `record_call`."
    marker = params["log"] + ".died"
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return record_call(params, report)


def broken(params, report):
    raise TypeError("MLP.__init__() got an unexpected keyword argument 'hiden'")


def run_and_check(url: str, log, n_trials: int, n_workers: int) -> None:
    res = tune(record_call, {**SPACE, "log": str(log)}, n_trials=n_trials, n_workers=n_workers, storage=url,
               study_name="shared", pruner="none")
    calls = [line.split() for line in log.read_text().splitlines()]
    trials = optuna.load_study(study_name="shared", storage=open_storage(url)).get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    assert states == {"COMPLETE": len(calls)}, states                          # none RUNNING, none failed
    assert sorted(t.number for t in trials) == list(range(len(trials)))        # numbered 0..N-1, each once
    assert Counter(repr(t.params["x"]) for t in trials) == Counter(x for _, x in calls)   # no lost or duplicated trial
    assert n_trials <= len(trials) < n_trials + n_workers, len(trials)         # overshoot below the number of workers
    pids = {pid for pid, _ in calls}
    assert len(pids) >= 2 and str(os.getpid()) not in pids, pids               # the workers ran them, not this process
    assert len(res.trials) == len(trials) and res.stopped_by == "n_trials"     # the result covers the whole study


def test_journal_file_two_workers(tmp_path):
    run_and_check(f"journal:{tmp_path / 'study.log'}", tmp_path / "calls.txt", n_trials=20, n_workers=2)


def test_sqlite_two_workers(tmp_path):
    run_and_check(f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "calls.txt", n_trials=20, n_workers=2)


@pytest.fixture
def postgres():
    "A throwaway PostgreSQL 15 cluster (stopped and removed afterwards); a missing PostgreSQL fails, never skips."
    try: cluster, error = PgCluster(), None
    except RuntimeError as e: error = str(e) if str(e) == MISSING else f"PostgreSQL did not start: {e}"
    if error: pytest.fail(error, pytrace=False)
    try: yield cluster.url
    finally: cluster.stop()


def test_postgresql_four_workers(postgres, tmp_path):
    run_and_check(postgres, tmp_path / "calls.txt", n_trials=16, n_workers=4)


def test_resumed_workers_make_up_the_rest(tmp_path):
    url, log = f"journal:{tmp_path / 'study.log'}", tmp_path / "calls.txt"
    tune(record_call, {**SPACE, "log": str(log)}, n_trials=5, storage=url, study_name="shared", pruner="none")
    again = tune(record_call, {**SPACE, "log": str(log)}, n_trials=12, n_workers=2, storage=url, study_name="shared", pruner="none")
    assert 12 <= again.counts["COMPLETE"] < 14 and again.counts["COMPLETE"] == len(log.read_text().splitlines())


def test_a_killed_worker_is_named_and_the_study_resumes(tmp_path):
    url, log = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "calls.txt"
    with pytest.raises(RuntimeError, match=r"^study 'shared': a worker process died .*run tune again to resume"):
        tune(dies_once, {**SPACE, "log": str(log)}, n_trials=10, n_workers=2, storage=url, study_name="shared", pruner="none")
    again = tune(dies_once, {**SPACE, "log": str(log)}, n_trials=10, n_workers=2, storage=url, study_name="shared", pruner="none")
    complete = again.trials[again.trials["state"] == "COMPLETE"]
    assert 10 <= len(complete) < 12 and again.counts.get("RUNNING", 0) <= 2     # killed trials: failed by heartbeat after 30 s
    calls = Counter(x for _, x in (line.split() for line in log.read_text().splitlines()))
    assert not Counter(repr(float(x)) for x in complete["params_x"]) - calls   # every complete trial is a call of the objective


def test_failing_workers_raise_in_the_caller(tmp_path):
    with pytest.raises(TrialsFailing, match=r"3 trials in a row failed with TypeError: MLP.__init__\(\) got an unexpected"):
        tune(broken, SPACE, n_trials=100, n_workers=2, max_failures=3, storage=f"journal:{tmp_path / 's.log'}")
    trials = optuna.load_study(study_name="atf", storage=open_storage(f"journal:{tmp_path / 's.log'}")).trials
    assert 3 <= len(trials) < 3 + 2 and all(t.state.name == "FAIL" for t in trials)


def test_time_budget_with_workers(tmp_path):
    t0 = time.time()
    res = tune(record_call, {**SPACE, "log": str(tmp_path / "calls.txt")}, n_trials=10_000, n_workers=2, timeout=4,
               storage=f"journal:{tmp_path / 's.log'}", pruner="none")
    assert res.stopped_by == "time budget 4s" and 0 < len(res.trials) < 10_000 and time.time() - t0 < 20


def test_unpicklable_objective_is_refused_before_any_worker(tmp_path):
    scale = 2.0
    def closure(params, report): return params["x"] * scale
    for objective in (lambda p, r: p["x"], closure):
        with pytest.raises(ValueError, match="^" + PICKLE_HINT.replace("(", r"\(").replace(")", r"\)")):
            tune(objective, SPACE, n_trials=4, n_workers=2, storage=f"journal:{tmp_path / 's.log'}")
    assert not (tmp_path / "s.log").exists()                                  # refused before the study was even opened


@pytest.mark.parametrize("url, message", [
    ("foo://x/y", "unknown scheme 'foo'"), ("mysql://u@h/db", "database driver for 'mysql' is not installed"),
    ("journal:", "no file after 'journal:'"), ("reports/optuna.db", "not a storage URL"), ("", "expected sqlite:///FILE")])
def test_check_storage_names_what_is_wrong(url, message):
    with pytest.raises(ValueError, match=message) as e:
        check_storage(url)
    assert "\n" not in str(e.value)


def test_check_storage_kinds(tmp_path):
    assert [check_storage(u) for u in (f"sqlite:///{tmp_path}/a.db", f"journal:{tmp_path}/a.log",
                                       "postgresql://u@127.0.0.1:5432/db")] == ["sqlite", "journal", "rdb"]


def test_dashboard_serves_a_journal_study(tmp_path):
    "`atf dashboard journal:FILE` opens the journal storage (optuna-dashboard alone takes only database URLs as strings)."
    import signal
    import subprocess
    import sys
    from pathlib import Path
    import httpx
    from pg_cluster import free_port
    tune(record_call, {**SPACE, "log": str(tmp_path / "calls.txt")}, n_trials=3, storage=f"journal:{tmp_path / 's.log'}",
         study_name="journal-study")
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "atf"), "dashboard", f"journal:{tmp_path / 's.log'}",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.time() + 60, None
        while time.time() < deadline and body is None and proc.poll() is None:
            try: body = httpx.get(f"http://127.0.0.1:{port}/api/studies", timeout=2).json()
            except httpx.HTTPError: time.sleep(0.5)
        assert body is not None, proc.stdout.read1(4000)
        assert [s["study_name"] for s in body["study_summaries"]] == ["journal-study"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
