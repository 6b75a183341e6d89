"""Is it luck? Trials keep their validation returns, every run reports DSR, PBO, the seed band and CPCV paths, and
`atf overfitting` recomputes the same figures from what the run kept."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from atf.config import ConfigError
from atf.experiments import fold_objective, load_experiment, prepare
from atf.features import direction_labels, make_features
from atf.learners import FoldData
from atf.experiments import trial_matrix
from atf.metrics import sharpe
from atf.tuning import tune
from atf.validation import CombinatorialPurged, WalkForward

ATF = str(Path(sys.executable).with_name("atf"))
TINY = {"name": "tiny", "data": {"dataset": "us_stocks", "assets": ["MSFT"], "start": "2004-01-01", "end": "2009-12-31"},
        "model": {"name": "logistic"}, "tuning": {"n_trials": 5, "metric": "sharpe", "pruner": "none"},
        "costs": {"fee_bps": 5, "slippage_bps": 5}, "walk_forward": {"train": 500, "validation": 200, "test": 250},
        "tearsheet": False}


def fold_study(cfg, df, fold, storage):
    F, y = make_features(df, cfg.features), direction_labels(df["close"], 1)
    obj = fold_objective(FoldData(df, F, y, 252.0), fold.train, fold.validation, cfg)
    tune(obj, {"C": {"type": "float", "low": 1e-3, "high": 10.0, "log": True}}, n_trials=5, storage=storage, study_name="f",
         seed=3, pruner="none")
    return trial_matrix("f", storage, df.index[fold.validation])


def test_each_trial_keeps_the_validation_returns_its_value_was_scored_on(tmp_path):
    cfg = load_experiment(TINY)
    df = prepare(cfg, "MSFT", "native")
    fold = WalkForward(train=500, validation=200, test=250).split(df)[0]
    storage = f"sqlite:///{tmp_path / 'a.db'}"
    m, best, counts = fold_study(cfg, df, fold, storage)
    values = {str(t.number): t.value for t in optuna.load_study(study_name="f", storage=storage).trials}
    assert m.shape == (200, 5) and counts == {"COMPLETE": 5, "PRUNED": 0, "FAIL": 0} and str(best) in m
    assert (m.index == df.index[fold.validation]).all()
    for c in m:   # the kept series is the one the trial's Sharpe was computed from
        assert math.isclose(sharpe(m[c], periods_per_year=252.0), values[c], rel_tol=1e-9, abs_tol=1e-12), c
    assert m.nunique(axis=1).max() > 1      # the trials differ


def test_kept_trial_returns_never_see_test_bars(tmp_path):
    cfg = load_experiment(TINY)
    df = prepare(cfg, "MSFT", "native")
    fold = WalkForward(train=500, validation=200, test=250).split(df)[0]
    after = np.arange(fold.validation[-1] + 1, len(df))
    poisoned = df.copy()
    poisoned.iloc[after, poisoned.columns.get_loc("close")] *= np.random.default_rng(0).uniform(0.5, 2.0, len(after))
    clean, _, _ = fold_study(cfg, df, fold, f"sqlite:///{tmp_path / 'a.db'}")
    dirty, _, _ = fold_study(cfg, poisoned, fold, f"sqlite:///{tmp_path / 'b.db'}")
    pd.testing.assert_frame_equal(clean, dirty)


def test_luck_config_mistakes_are_one_line():
    cpcv = {"scheme": "cpcv", "embargo": 60}
    for bad, key in (({"seeds": []}, "seeds"), ({"seeds": [1, 1]}, "seeds"), ({"tuning": {"pbo_blocks": 7}}, "tuning.pbo_blocks"),
                     ({"tuning": {"pbo_blocks": 22}}, "tuning.pbo_blocks"), ({"walk_forward": {"scheme": "cpvc"}}, "walk_forward.scheme"),
                     ({"walk_forward": {**cpcv, "validation_groups": 0}}, "walk_forward.validation_groups"),
                     ({"walk_forward": {**cpcv, "purge": 2}, "label": {"horizon": 5}}, "walk_forward"),
                     ({"walk_forward": cpcv, "model": {"name": "mlp"}, "search_space": {"window": 80}}, "walk_forward.embargo"),
                     ({"walk_forward": cpcv, "model": {"name": "ppo"}, "tuning": {"metric": "sharpe"}}, "walk_forward.scheme")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
            load_experiment({**TINY, **bad})
        assert "\n" not in str(e.value)


def test_cpcv_config_with_seeds_reports_luck_and_recomputes_it(tmp_path):
    "configs/experiment_cpcv.yaml at CI size: DSR, PBO, PSR, the seed band and the CPCV paths in run.json, the report and the CLI."
    cfg = yaml.safe_load(Path("configs/experiment_cpcv.yaml").read_text())
    cfg |= {"output_dir": str(tmp_path / "reports"), "memory_bank": str(tmp_path / "mb"), "tearsheet": False,
            "data": {**cfg["data"], "start": "2006-01-01", "end": "2011-12-31"}, "train": {"max_epochs": 2, "batch_size": 256}}
    cfg["walk_forward"] |= {"n_groups": 4, "n_test_groups": 2}
    cfg["tuning"] |= {"n_trials": 4, "pbo_blocks": 8}
    p = tmp_path / "cpcv.yaml"; p.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([ATF, "experiment", str(p), "--run-id", "r", "-q"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "reports" / "r"
    luck = json.loads((out / "run.json").read_text())["luck"]["MSFT_native"]
    assert luck["cpcv_paths"]["n"] == 3 and luck["seed_band"]["n"] == 3                  # C(3,1) paths; seeds 0, 1, 2
    assert luck["trials"]["trials"] == 6 * 4 and 0 <= luck["pbo"] <= 1 and 0 <= luck["dsr"] <= 1 and 0 <= luck["oos_psr"] <= 1
    assert luck["seed_band"]["sharpe"]["min"] <= luck["seed_band"]["sharpe"]["median"] <= luck["seed_band"]["sharpe"]["max"]
    assert luck["verdict"] and set(luck["thresholds"]) == {"dsr", "pbo"}
    folds = pd.read_csv(out / "folds.csv")
    assert len(folds) == 6 and len(list((out / "trials" / "MSFT_native").glob("fold*.parquet"))) == 6
    m = pd.read_parquet(out / "trials" / "MSFT_native" / "fold0.parquet")
    assert len(m) == folds["validation_bars"].iloc[0] and m.shape[1] == folds["trials"].iloc[0] - folds["failed"].iloc[0] - folds["pruned"].iloc[0]
    paths = pd.read_csv(out / "oos_paths_MSFT_native.csv", index_col=0, parse_dates=True)
    oos = pd.read_csv(out / "oos_MSFT_native.csv", index_col=0, parse_dates=True)
    pd.testing.assert_series_equal(paths["path 1"].dropna(), oos["model"], check_names=False, check_freq=False)   # the headline is path 1
    seeds = pd.read_csv(out / "oos_seeds_MSFT_native.csv", index_col=0, parse_dates=True)
    pd.testing.assert_series_equal(seeds["seed 0"].dropna(), oos["model"], check_names=False, check_freq=False)   # ... refit with the first seed
    page = (out / "report_MSFT_native.html").read_text()
    assert "Is it luck?" in page and "CPCV backtest paths" in page and "Refit seeds" in page
    cli = subprocess.run([ATF, "overfitting", str(out)], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert luck["verdict"] in cli.stdout and f"median DSR {luck['dsr']:.3f}" in cli.stdout and f"mean PBO {luck['pbo']:.3f}" in cli.stdout
    assert "note:" not in cli.stdout and "CPCV paths (3): Sharpe median" in cli.stdout       # the same figures as the run's
    assert "CPCV path 1 of 3" in page and "over 3 CPCV paths: median" in luck["verdict"]
    entry = [json.loads(l) for l in (tmp_path / "mb" / "runs.jsonl").read_text().splitlines()][-1]
    assert entry["luck"]["MSFT_native"]["dsr"] == luck["dsr"] and entry["luck"]["MSFT_native"]["cpcv_paths"]["n"] == 3
    bad = subprocess.run([ATF, "overfitting", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "no trials/ folder" in bad.stderr and bad.stderr.count("\n") == 1
    bad = subprocess.run([ATF, "overfitting", str(out), "--blocks", "7"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--blocks: 7 must be an even number from 4 to 20" in bad.stderr and bad.stderr.count("\n") == 1


def cpcv_fold_study(cfg, df, fold, storage):
    F, y = make_features(df, cfg.features), direction_labels(df["close"], 1)
    obj = fold_objective(FoldData(df, F, y, 252.0), fold.train, fold.validation, cfg)
    res = tune(obj, {"C": {"type": "float", "low": 1e-3, "high": 10.0, "log": True}}, n_trials=4, storage=storage,
               study_name="f", seed=3, pruner="none")
    return res, trial_matrix("f", storage, df.index[fold.validation])[0]


@pytest.mark.parametrize("embargo, leaks", [(20, False), (0, True)])
def test_cpcv_tuning_never_sees_test_bars_when_the_embargo_covers_the_features(tmp_path, embargo, leaks):
    """Under CPCV, training and validation bars come after test groups too: their features look back into the test
    bars unless the embargo covers the features' lookback (here 11 bars of finite windows, model.window 10 counted). With such an
    embargo, poisoning the test bars changes nothing that tuning sees; without it, it does (so the test can fail)."""
    cfg = load_experiment({**TINY, "features": {"return_horizons": [1, 5], "volatility_windows": [10], "rsi_window": None,
                                                "macd": False, "atr_window": None, "volume_window": None},
                           "walk_forward": {"scheme": "cpcv", "n_groups": 5, "n_test_groups": 2, "embargo": 20}})
    assert cfg.features.warmup == 11
    with pytest.raises(ConfigError, match="walk_forward.embargo: 0 .* at least 20"):     # the config refuses the leaking case
        load_experiment({**TINY, "features": cfg.features.__dict__, "walk_forward": {**cfg.walk_forward.__dict__, "embargo": 0}})
    df = prepare(cfg, "MSFT", "native")
    splitter = CombinatorialPurged(n_groups=5, n_test_groups=2, embargo=embargo)           # ... so build its folds directly
    fold = next(f for f in splitter.split(df) if f.test[0] > f.train[0] and f.validation[0] > f.test[-1])
    poisoned = df.copy()
    for col in ("open", "high", "low", "close"):
        poisoned.iloc[fold.test, poisoned.columns.get_loc(col)] *= np.random.default_rng(0).uniform(0.5, 2.0, len(fold.test))
    (a, ma), (b, mb) = (cpcv_fold_study(cfg, d, fold, f"sqlite:///{tmp_path / n}") for d, n in ((df, "a.db"), (poisoned, "b.db")))
    same = a.best_params == b.best_params and a.trials["value"].tolist() == b.trials["value"].tolist() and ma.equals(mb)
    assert same != leaks


def test_one_completed_trial_among_many_has_no_deflated_sharpe():
    "The variance of the trials' Sharpe ratios needs two completed trials: with one among twenty, the DSR is unavailable, not undeflated."
    from atf.luck import fold_luck
    one = pd.DataFrame({"3": np.random.default_rng(0).normal(0.002, 0.01, 250)})
    row = fold_luck(one, 3, {"COMPLETE": 1, "PRUNED": 19}, 252)
    assert "dsr" not in row and "pbo" not in row and row["trials"] == 20 and row["selected_sharpe_annual"] > 0
    alone = fold_luck(one, 3, {"COMPLETE": 1}, 252)           # one trial run: nothing was selected, the DSR is the PSR
    assert alone["expected_max_sharpe_annual"] == 0 and 0.5 < alone["dsr"] < 1
