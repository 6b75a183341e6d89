import logging
import os
import sys
import warnings

import pandas as pd
import pytest

from atf.data import load_dataset

sys.path.insert(0, os.path.dirname(__file__))      # tests/ray_cluster.py

logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)   # quantstats' findfont noise
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="session")
def spx_returns() -> pd.Series:
    "Real daily S&P 500 index returns, 1990-2022."
    return load_dataset("sp500_index")["close"].pct_change().dropna()


@pytest.fixture(scope="session")
def stock_returns() -> dict[str, pd.Series]:
    "Real daily adjusted returns of several stocks (volatile and calm ones)."
    return {a: load_dataset("sp500_stocks", a)["close"].pct_change().dropna() for a in ("AAPL", "AMD", "KO", "XOM")}


def _tiny_run(out, name: str, model: dict, extra: dict | None = None):
    from atf.experiments import load_experiment, run_experiment
    cfg = load_experiment({
        "name": name, "data": {"dataset": "us_stocks", "assets": ["IBM"], "start": "2006-01-01", "end": "2010-12-31"},
        "model": model, "train": {"max_epochs": 2, "batch_size": 128}, "tuning": {"n_trials": 1},
        "walk_forward": {"train": 500, "validation": 150, "test": 250}, "output_dir": str(out), "memory_bank": None, "tearsheet": False,
        **(extra or {})})
    return run_experiment(cfg, run_id=name, progress=False)


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict:
    "Small real runs exported once per test process: two supervised models (primary, fallback) and a PPO agent."
    from atf.export import export_run
    out = tmp_path_factory.mktemp("runs")
    runs = {"mlp": _tiny_run(out, "mlp", {"name": "mlp", "window": 5, "params": {"hidden": 16}}, {"search_space": {"lr": [0.003]}}),
            "lstm": _tiny_run(out, "lstm", {"name": "lstm", "window": 8, "params": {"hidden": 8}}, {"search_space": {"lr": [0.003]}}),
            "ppo": _tiny_run(out, "ppo", {"name": "ppo", "window": 5, "params": {"n_steps": 64, "batch_size": 64, "net_arch": "tiny"}},
                             {"rl": {"total_timesteps": 256, "eval_every": 128, "n_envs": 2, "include_pnl": True},
                              "search_space": {"gamma": [0.99]}})}
    return {k: {"run": r, "model": export_run(r)[0]} for k, r in runs.items()}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    "A real Ray cluster on 127.0.0.1 for this test process: a head node with 2 CPUs (tests add worker nodes to it)."
    from ray_cluster import Cluster
    os.environ["RAY_AUTH_MODE"] = "disabled"          # nodes listen on 127.0.0.1 only
    cluster = Cluster(tmp_path_factory.mktemp("ray"), head_cpus=2)
    yield cluster
    import ray
    ray.shutdown()
    cluster.stop()
