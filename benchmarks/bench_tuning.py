"""Tuning speed: pruning on/off on the same study budget, and 1 vs 2 worker processes on one SQLite study.

The objective is real: an LSTM on AAPL daily features (2004-2012), trained on the first walk-forward fold's
training bars and scored by validation loss each epoch (so the median pruner has learning curves to compare).

    python benchmarks/bench_tuning.py [--trials 20] [--epochs 15]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
import warnings

import numpy as np


def make_objective(epochs: int):
    import torch
    torch.set_num_threads(1)                     # one core per worker: 1- and 2-process runs compare fairly
    from atf.experiments import fold_objective, load_experiment, prepare
    from atf.learners import FoldData
    from atf.features import direction_labels, make_features
    from atf.validation import WalkForward
    cfg = load_experiment({"data": {"dataset": "us_stocks", "assets": ["AAPL"], "start": "2004-01-01", "end": "2012-12-31"},
                           "model": {"name": "lstm", "window": 10},
                           "train": {"max_epochs": epochs, "patience": epochs, "batch_size": 128},
                           "tuning": {"metric": "val_loss"}})
    df = prepare(cfg, "AAPL", "native")
    F, y = make_features(df, cfg.features), direction_labels(df["close"], 1)
    fold = WalkForward(train=1000, validation=300, test=300).split(df)[0]
    return fold_objective(FoldData(df, F, y, 252.0), fold.train, fold.validation, cfg)


SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
         "hidden": {"type": "int", "low": 16, "high": 64, "step": 16}, "dropout": {"type": "float", "low": 0.0, "high": 0.5}}


def run_study(storage: str, name: str, trials: int, epochs: int, pruner: str, seed: int = 0):
    from atf.tuning import tune
    return tune(make_objective(epochs), SPACE, n_trials=trials, direction="minimize", storage=storage,
                study_name=name, seed=seed, pruner=pruner)


def worker(args):
    storage, name, trials, epochs, seed = args
    warnings.filterwarnings("ignore")
    run_study(storage, name, trials, epochs, "none", seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=15)
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as d:
        db = f"sqlite:///{d}/bench.db"
        res = {}
        for pruner in ("none", "median", "hyperband"):
            t0 = time.perf_counter()
            r = run_study(db, f"pruning-{pruner}", a.trials, a.epochs, pruner)
            res[pruner] = (time.perf_counter() - t0, r.best_value, r.counts)
        t_none, v_none, _ = res["none"]
        print(f"study: LSTM on AAPL daily, {a.trials} trials x up to {a.epochs} epochs, objective = validation loss, same seed")
        print(f"  no pruning         {t_none:7.1f} s   best {v_none:.5f}")
        for pruner in ("median", "hyperband"):
            t, v, c = res[pruner]
            print(f"  {pruner:9s} pruning  {t:7.1f} s   best {v:.5f}   ({c.get('PRUNED', 0)} of {a.trials} pruned)   "
                  f"wall time cut {1 - t / t_none:.0%}, best value within {abs(v / v_none - 1):.2%}")

        import optuna
        rates = {}
        for workers in (1, 2):
            name = f"workers-{workers}"
            optuna.create_study(study_name=name, storage=db, direction="minimize")
            t0 = time.perf_counter()
            with mp.get_context("spawn").Pool(workers) as pool:
                pool.map(worker, [(db, name, a.trials, a.epochs, s) for s in range(workers)])
            elapsed = time.perf_counter() - t0
            done = len([t for t in optuna.load_study(study_name=name, storage=db).trials if t.state.is_finished()])
            rates[workers] = done / elapsed * 60
            print(f"  {workers} worker process(es) on one SQLite study: {done} trials in {elapsed:.1f} s = {rates[workers]:.1f} trials/min")
        print(f"  2 workers / 1 worker throughput: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
