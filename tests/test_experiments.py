"""Nested walk-forward: tuning never sees a fold's test data; the experiment runs end to end from the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atf.experiments import fold_objective, load_experiment, prepare, regime_labels
from atf.learners import FoldData
from atf.features import direction_labels, make_features
from atf.tuning import tune
from atf.validation import WalkForward

TINY = {"name": "tiny", "data": {"dataset": "us_stocks", "assets": ["MSFT"], "start": "2004-01-01", "end": "2009-12-31"},
        "model": {"name": "mlp", "window": 5, "params": {"hidden": 8}},
        "train": {"max_epochs": 3, "patience": 2, "batch_size": 128},
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}, "hidden": [8, 16]},
        "tuning": {"n_trials": 3, "metric": "sharpe", "pruner": "none"},
        "walk_forward": {"train": 500, "validation": 200, "test": 250}, "tearsheet": False}


def tune_fold(cfg, df, F, y, fold, storage):
    obj = fold_objective(FoldData(df, F, y, 252.0), fold.train, fold.validation, cfg)
    return tune(obj, cfg.search_space, n_trials=3, storage=storage, study_name="f", seed=7, pruner="none")


def test_tuning_never_sees_test_data(tmp_path):
    cfg = load_experiment(TINY)
    df = prepare(cfg, "MSFT", "native")
    F, y = make_features(df, cfg.features), direction_labels(df["close"], 1)
    fold = WalkForward(train=500, validation=200, test=250, label_horizon=1).split(df)[0]
    clean = tune_fold(cfg, df, F, y, fold, f"sqlite:///{tmp_path / 'a.db'}")
    # poison everything after the validation segment: prices, features and labels
    after = np.arange(fold.validation[-1] + 1, len(df))
    rng = np.random.default_rng(0)
    df2 = df.copy(); df2.iloc[after, df2.columns.get_loc("close")] *= rng.uniform(0.5, 2.0, len(after))
    F2, y2 = F.copy(), y.copy()
    F2.iloc[after] = rng.normal(size=(len(after), F.shape[1]))
    y2.iloc[after] = -y2.iloc[after]
    poisoned = tune_fold(cfg, df2, F2, y2, fold, f"sqlite:///{tmp_path / 'b.db'}")
    assert poisoned.best_params == clean.best_params
    np.testing.assert_array_equal(poisoned.trials["value"], clean.trials["value"])   # every trial scored identically


def test_regimes_are_causal():
    close = prepare(load_experiment(TINY), "MSFT", "native")["close"]
    a = regime_labels(close, 50, 20)
    b = regime_labels(close.where(close.index <= close.index[800], close * 3), 50, 20)
    assert a.iloc[:801].equals(b.iloc[:801]) and set(a.unique()) >= {"up/high_vol", "down/low_vol", "warmup"}


def test_experiment_cli_end_to_end(tmp_path):
    import yaml
    cfg = {**TINY, "data": {**TINY["data"], "timeframes": ["native", "1W"], "start": "2001-01-01"},
           "walk_forward": {"train": 150, "validation": 50, "test": 80}, "tuning": {"n_trials": 2, "metric": "f1"},
           "output_dir": str(tmp_path / "reports"), "memory_bank": str(tmp_path / "mb")}
    # weekly bars are fewer: the same bar counts make several folds at both timeframes
    p = tmp_path / "exp.yaml"; p.write_text(yaml.safe_dump(cfg))
    atf = str(Path(sys.executable).parent / "atf")
    res = subprocess.run([atf, "experiment", str(p), "--run-id", "e2e", "-q"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "reports" / "e2e"
    m = pd.read_csv(out / "metrics.csv", index_col=0, header=[0, 1])
    assert {"MSFT_native", "MSFT_1W"} <= set(m.columns.get_level_values(0))
    assert m.loc["periods_per_year", ("MSFT_1W", "model")] == 52
    reg = pd.read_csv(out / "regimes.csv", index_col=0)
    assert set(reg["timeframe"]) == {"native", "1W"}
    html = (out / "report_MSFT_native.html").read_text()
    assert "Optuna history" in html and "By market regime" in html
    assert len(list((out / "plots").glob("*.png"))) == 8
    runs = [json.loads(l) for l in (tmp_path / "mb" / "runs.jsonl").read_text().splitlines()]
    assert runs[-1]["run_id"] == "e2e" and "MSFT_native" in runs[-1]["oos_sharpe"]
    run = json.loads((out / "run.json").read_text())
    assert run["periods_per_year"] == {"MSFT_native": 252.0, "MSFT_1W": 52.0} and run["rebalance"] == "on_change"
    # one continuous account over the stitched test bars: buy-and-hold is the price ratio less one entry cost
    exp = load_experiment(cfg)
    kb = (1 + exp.costs.slippage_bps / 1e4) * (1 + exp.costs.fee_bps / 1e4) - 1
    for tf in ("native", "1W"):
        oos = pd.read_csv(out / f"oos_MSFT_{tf}.csv", index_col=0, parse_dates=True)
        close = prepare(exp, "MSFT", tf)["close"]
        ratio = close[oos.index[-1]] / close[oos.index[0]] / (1 + kb)
        assert abs(np.prod(1 + oos["buy_and_hold"]) - ratio) < 1e-12
        folds = pd.read_csv(out / "folds.csv").query("timeframe == @tf")
        assert len(folds) >= 2 and np.isclose(np.prod(1 + folds["test_return"]), np.prod(1 + oos["model"]), rtol=1e-12)


def test_periods_per_year_come_from_the_config_the_rule_or_the_bars():
    from atf.experiments import periods_for
    from atf.config import ConfigError
    cfg = load_experiment({**TINY, "data": {**TINY["data"], "timeframes": ["native", "2W", "QE"]}})
    df = prepare(cfg, "MSFT", "native")
    assert periods_for(cfg, df, "native") == 252 and periods_for(cfg, df, "2W") == 26 and periods_for(cfg, df, "QE") == 4
    over = load_experiment({**TINY, "data": {**TINY["data"], "timeframes": ["native", "2W"], "periods_per_year": {"2W": 25}}})
    assert periods_for(over, df, "2W") == 25 and periods_for(over, df, "native") == 252
    with pytest.raises(ConfigError, match=r"data.periods_per_year: timeframes \['1D'\] are not in"):
        load_experiment({**TINY, "data": {**TINY["data"], "periods_per_year": {"1D": 252}}})
    with pytest.raises(ConfigError, match="one number for several timeframes"):
        load_experiment({**TINY, "data": {**TINY["data"], "timeframes": ["native", "1W"], "periods_per_year": 252}})
    with pytest.raises(ConfigError, match="trading.rebalance"):
        load_experiment({**TINY, "trading": {"rebalance": "daily"}})


def test_bad_experiment_config_names_the_key():
    from atf.config import ConfigError
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['train.learning_rate'\]"):
        load_experiment({"train": {"learning_rate": 0.1}})


TINY_RL = {**TINY, "name": "tiny-ppo",
           "model": {"name": "ppo", "window": 5, "params": {"n_steps": 64, "batch_size": 64, "n_epochs": 1, "net_arch": "tiny"}},
           "rl": {"total_timesteps": 256, "eval_every": 128, "n_envs": 2, "episode_length": 64},
           "search_space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}, "gamma": [0.9, 0.99]},
           "tuning": {"n_trials": 3, "metric": "sharpe", "pruner": "none"}}


def test_rl_tuning_never_sees_test_data(tmp_path):
    "Agents are tuned on train/validation bars only: poisoned bars after validation change no trial."
    cfg = load_experiment(TINY_RL)
    df = prepare(cfg, "MSFT", "native")
    fold = WalkForward(train=500, validation=200, test=250, label_horizon=1).split(df)[0]
    after = np.arange(fold.validation[-1] + 1, len(df))
    poisoned = df.copy()
    poisoned.iloc[after, poisoned.columns.get_loc("close")] *= np.random.default_rng(0).uniform(0.5, 2.0, len(after))
    def study(frame, name):
        data = FoldData(frame, make_features(frame, cfg.features), direction_labels(frame["close"], 1), 252.0)
        return tune(fold_objective(data, fold.train, fold.validation, cfg), cfg.search_space, n_trials=3,
                    storage=f"sqlite:///{tmp_path / name}", study_name="f", seed=7, pruner="none")
    clean, dirty = study(df, "a.db"), study(poisoned, "b.db")
    assert dirty.best_params == clean.best_params
    np.testing.assert_array_equal(dirty.trials["value"], clean.trials["value"])
    assert clean.trials["value"].nunique() > 1          # the trials differ: the comparison is not vacuous


def test_rl_experiment_from_the_shipped_config_end_to_end(tmp_path):
    "configs/experiment_ppo.yaml, shrunk to CI size, through `atf experiment`: reports, agent zip, memory bank."
    import yaml
    cfg = yaml.safe_load(Path("configs/experiment_ppo.yaml").read_text())
    cfg |= {"data": {**cfg["data"], "start": "2009-01-01"}, "output_dir": str(tmp_path / "reports"),
            "memory_bank": str(tmp_path / "mb"), "walk_forward": {"train": "730D", "validation": "365D", "test": "365D"}}
    cfg["rl"] |= {"total_timesteps": 512, "eval_every": 256, "n_envs": 2}
    cfg["search_space"] |= {"n_steps": [64], "batch_size": [64]}
    p = tmp_path / "ppo.yaml"; p.write_text(yaml.safe_dump(cfg))
    atf = str(Path(sys.executable).parent / "atf")
    res = subprocess.run([atf, "experiment", str(p), "--run-id", "ppo", "--trials", "2", "-q", "--no-tearsheet"], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "reports" / "ppo"
    folds = pd.read_csv(out / "folds.csv")
    assert len(folds) >= 2 and (folds["trials"] == 2).all()
    assert all(set(json.loads(b)) == {"learning_rate", "gamma", "ent_coef", "n_steps", "batch_size", "clip_range"}
               for b in folds["best_params"])
    oos = pd.read_csv(out / "oos_AAPL_native.csv", index_col=0, parse_dates=True)
    assert oos.index.is_monotonic_increasing and oos.index[0] >= pd.Timestamp(folds["test_start"].iloc[0])
    assert set(oos["position"].unique()) <= {0.0, 1.0}                  # discrete2: flat or long
    assert (out / "model_AAPL_native.zip").exists() and "Optuna history" in (out / "report_AAPL_native.html").read_text()
    runs = [json.loads(l) for l in (tmp_path / "mb" / "runs.jsonl").read_text().splitlines()]
    assert runs[-1]["model"] == "ppo" and "AAPL_native" in runs[-1]["oos_sharpe"]


def test_bad_rl_config_names_the_key():
    from atf.config import ConfigError
    with pytest.raises(ConfigError, match="rl.reward"):
        load_experiment({"model": {"name": "ppo"}, "tuning": {"metric": "sharpe"}, "rl": {"reward": "sharp"}})
    with pytest.raises(ConfigError, match="not an RL validation metric"):
        load_experiment({"model": {"name": "a2c"}, "tuning": {"metric": "f1"}})


def test_fold_tasks_pickle_and_every_executor_gives_the_same_results(tmp_path):
    "A fold is a picklable task; serial and process-pool executors give identical out-of-sample results."
    import pickle
    from atf.experiments import fold_tasks, run_asset
    from atf.scaling import ProcessExecutor, SerialExecutor
    cfg = load_experiment({**TINY, "tuning": {"n_trials": 2, "metric": "sharpe", "pruner": "none"}, "memory_bank": None})
    tasks = fold_tasks(cfg, "MSFT", "native", tmp_path / "t")
    assert len(tasks) >= 2 and pickle.loads(pickle.dumps(tasks[0])).fold.test.tolist() == tasks[0].fold.test.tolist()
    assert [t.save_model is not None for t in tasks] == [False] * (len(tasks) - 1) + [True]
    (tmp_path / "a").mkdir(); (tmp_path / "b").mkdir()
    a = run_asset(cfg, "MSFT", "native", tmp_path / "a", False, SerialExecutor())
    b = run_asset(cfg, "MSFT", "native", tmp_path / "b", False, ProcessExecutor(2))
    for k in ("oos", "positions", "benchmark", "logistic"):
        pd.testing.assert_series_equal(a[k], b[k])
    pd.testing.assert_frame_equal(a["folds"], b["folds"])
    assert a["model"].exists() and b["model"].exists()
    assert len(list((tmp_path / "a" / "tasks").glob("*.pkl"))) == len(tasks)       # each finished fold task cached
