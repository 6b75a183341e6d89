"""`tune(..., backend="ray_tune")` on a real Ray cluster (tests/ray_cluster.py): ASHA-stopped trials count as pruned and
never as the best, the Optuna study holds the same trials, and a second call runs only the trials still missing."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
import ray
from optuna.trial import TrialState

from atf.tuning import Scored, TrialsFailing, drop_study, ray_tune_dir, tune

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # Ray's workers cannot import this test module

SPACE = {"x": {"type": "float", "low": -10, "high": 10}, "kind": ["good", "bad"], "c": 7}


def score(params: dict) -> float:
    "What the toy objective returns: best at x = 3 with kind 'good'."
    return -(params["x"] - 3) ** 2 - (20 if params["kind"] == "bad" else 0)


def make_toy():
    "The toy objective."
    def toy(params, report):
        assert params["c"] == 7                              # fixed values reach the objective
        for step in range(6):
            # every intermediate value (about 1000) is above every returned value (at most 0): a stopped trial whose
            # last report were taken as its result would become the best
            report(step, 1000 + score(params) + step)
            time.sleep(0.02)
        return score(params)
    return toy


def states(storage: str, name: str) -> dict:
    return {t.number: t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials}


@pytest.fixture(scope="module")
def study(ray_cluster, tmp_path_factory):
    "One 6-trial study on 2 concurrent trials, shared by the tests below (Ray experiments cost seconds each)."
    storage = f"sqlite:///{tmp_path_factory.mktemp('ray_tune')}/optuna.db"
    t0 = time.perf_counter()
    res = tune(make_toy(), SPACE, n_trials=6, storage=storage, study_name="toy", seed=1, backend="ray_tune",
               n_workers=2, address=ray_cluster.address)
    return storage, res, time.perf_counter() - t0


@pytest.mark.xdist_group("ray")
def test_asha_stopped_trials_are_pruned_not_best(study):
    storage, res, seconds = study
    print(f"6 trials on Ray: {seconds:.1f}s wall, {res.counts}")
    counts = res.counts
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 6 and counts.get("PRUNED", 0) > 0, counts
    complete = res.trials[res.trials["state"] == "COMPLETE"]
    returned = [score({"x": x, "kind": k}) for x, k in zip(complete["params_x"], complete["params_kind"])]
    assert res.best_value == max(returned) and res.best_value < 1000          # not a stopped trial's last report
    assert res.trials.loc[res.trials["state"] == "PRUNED", "value"].min() > res.best_value   # each would have been higher
    assert score(res.best_params) == res.best_value and "c" not in res.best_params  # fixed values are not params
    assert states(storage, "toy") == dict(zip(res.trials["number"], res.trials["state"]))
    study = optuna.load_study(study_name="toy", storage=storage)
    assert all(len(t.intermediate_values) >= 2 for t in study.trials)           # the curves are in the study too
    assert (ray_tune_dir(storage, "toy") / "from-0").is_dir()


@pytest.mark.xdist_group("ray")
def test_second_call_runs_only_the_missing_trials(study, ray_cluster):
    storage, first, _ = study
    more = tune(make_toy(), SPACE, n_trials=7, storage=storage, study_name="toy", seed=1, backend="ray_tune",
                n_workers=2, address=ray_cluster.address)
    assert len(more.trials) == 7 and more.stopped_by == "n_trials"
    assert more.trials.iloc[:6]["state"].tolist() == first.trials["state"].tolist()   # earlier trials kept as they were
    assert sorted(p.name for p in ray_tune_dir(storage, "toy").iterdir()) == ["from-0", "from-6"]
    again = tune(make_toy(), SPACE, n_trials=7, storage=storage, study_name="toy", backend="ray_tune", address=ray_cluster.address)
    assert again.stopped_by == "already complete" and len(again.trials) == 7


@pytest.mark.xdist_group("ray")
def test_finished_experiment_is_restored_not_rerun(ray_cluster, tmp_path):
    "A call killed after its experiment ended but before the study was written: the next call restores the experiment."
    storage = f"sqlite:///{tmp_path}/optuna.db"
    first = tune(make_toy(), SPACE, n_trials=3, storage=storage, study_name="r", backend="ray_tune", pruner="none",
                 address=ray_cluster.address)
    ids = {t.user_attrs["ray_trial_id"] for t in optuna.load_study(study_name="r", storage=storage).trials}
    assert drop_study(storage, "r")                   # the study never heard of the experiment
    again = tune(make_toy(), SPACE, n_trials=3, storage=storage, study_name="r", backend="ray_tune", pruner="none",
                 address=ray_cluster.address)
    assert {t.user_attrs["ray_trial_id"] for t in optuna.load_study(study_name="r", storage=storage).trials} == ids
    assert again.counts == first.counts == {"COMPLETE": 3} and again.best_value == first.best_value
    assert [p.name for p in ray_tune_dir(storage, "r").iterdir()] == ["from-0"]     # no new experiment ran


SLOW = textwrap.dedent("""
    import sys, time
    from atf.tuning import tune
    def slow(params, report):
        for step in range(3):
            report(step, -abs(params["x"] - 1) + step)
            time.sleep(0.5)
        return -abs(params["x"] - 1)
    tune(slow, {"x": {"type": "float", "low": -5, "high": 5}}, n_trials=4, storage=sys.argv[1], study_name="k",
         backend="ray_tune", pruner="none", address=sys.argv[2])
""")


@pytest.mark.xdist_group("ray")
def test_killed_call_is_restored(ray_cluster, tmp_path):
    "kill -9 of the calling process mid-experiment: the next call restores the experiment and runs only what is missing."
    storage, script = f"sqlite:///{tmp_path}/o.db", tmp_path / "job.py"
    script.write_text(SLOW)
    job = subprocess.Popen([sys.executable, str(script), storage, ray_cluster.address], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder, t0, done = ray_tune_dir(storage, "k") / "from-0", time.time(), []
    while len(done) < 2 and time.time() - t0 < 120:
        done = [p.parent.name.split("_")[1] for p in folder.glob("run_*/result.json") if '"COMPLETE"' in p.read_text()]
        time.sleep(0.3)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    started = {p.name for p in folder.glob("run_*")}
    assert len(done) >= 2 and not optuna.load_study(study_name="k", storage=storage).trials   # killed before it wrote any
    namespace = {}
    exec(SLOW.split("tune(slow")[0], namespace)                                  # the same objective, in this process
    res = tune(namespace["slow"], {"x": {"type": "float", "low": -5, "high": 5}}, n_trials=4, storage=storage,
               study_name="k", backend="ray_tune", pruner="none", address=ray_cluster.address)
    ids = [t.user_attrs["ray_trial_id"] for t in optuna.load_study(study_name="k", storage=storage).trials]
    assert res.counts == {"COMPLETE": 4} and set(done) <= set(ids) and len(ids) == 4
    assert [p.name for p in ray_tune_dir(storage, "k").iterdir()] == ["from-0"]      # restored, not a new experiment
    # the planned trials, no more: a folder the restored experiment does not know was left by the killed call (a trial
    # it started after its last experiment checkpoint, which Ray Tune cannot restore and samples again)
    runs = {p.name: p.name.split("_")[1] for p in folder.glob("run_*")}
    assert {i for n, i in runs.items() if n not in started} <= set(ids)
    assert {n for n, i in runs.items() if i not in ids} <= started


@pytest.mark.xdist_group("ray")
def test_trials_failing_alike_stop_the_study(ray_cluster, tmp_path):
    def broken(params, report):
        raise KeyError("hiden")
    with pytest.raises(TrialsFailing, match="2 trials in a row failed with KeyError"):
        tune(broken, {"x": [1, 2, 3]}, n_trials=6, storage=f"sqlite:///{tmp_path}/o.db", study_name="b",
             backend="ray_tune", max_failures=2, address=ray_cluster.address)
    study = optuna.load_study(study_name="b", storage=f"sqlite:///{tmp_path}/o.db")
    assert study.trials and all(t.state == TrialState.FAIL for t in study.trials)


@pytest.mark.xdist_group("ray")
def test_bad_backend_is_one_line(tmp_path):
    "Refused before any work (no Ray needed)."
    for kwargs, msg in [({"backend": "ray"}, "backend 'ray': use one of"), ({"address": "127.0.0.1:1"}, "only for backend 'ray_tune'")]:
        with pytest.raises(ValueError, match=msg) as e:
            tune(make_toy(), SPACE, n_trials=1, storage=f"sqlite:///{tmp_path}/o.db", **kwargs)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "o.db").exists()


@pytest.mark.xdist_group("ray")
def test_scored_attributes_reach_the_study(ray_cluster, tmp_path):
    "An objective's Scored attributes (a trial's validation returns in experiments) are kept on the Optuna trial, as with Optuna."
    def scored(params, report):
        report(0, params["x"])
        return Scored(params["x"], {"validation_returns": [params["x"], 0.5]})
    storage = f"sqlite:///{tmp_path}/o.db"
    tune(scored, {"x": {"type": "float", "low": 0, "high": 1}}, n_trials=3, storage=storage, study_name="s",
         backend="ray_tune", pruner="none", address=ray_cluster.address)
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert len(trials) == 3 and all(t.user_attrs["validation_returns"] == [t.value, 0.5] for t in trials)
