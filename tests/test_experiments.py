"""Nested walk-forward: tuning never sees a fold's test data; the experiment runs end to end from the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atf.experiments import fold_objective, load_experiment, prepare, regime_labels
from atf.features import direction_labels, make_features
from atf.tuning import tune
from atf.validation import WalkForward

TINY = {"name": "tiny", "data": {"dataset": "us_stocks", "assets": ["MSFT"], "start": "2004-01-01", "end": "2009-12-31"},
        "model": {"name": "mlp", "window": 5, "params": {"hidden": 8}},
        "train": {"max_epochs": 3, "patience": 2, "batch_size": 128},
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}, "hidden": [8, 16]},
        "tuning": {"n_trials": 3, "metric": "sharpe", "pruner": "none"},
        "walk_forward": {"train": 500, "validation": 200, "test": 250}}


def tune_fold(cfg, df, F, y, fold, storage):
    obj = fold_objective(F, y, df["close"], fold.train, fold.validation, cfg, 252.0)
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


def test_bad_experiment_config_names_the_key():
    from atf.studies import ConfigError
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['train.learning_rate'\]"):
        load_experiment({"train": {"learning_rate": 0.1}})
