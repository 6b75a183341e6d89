"""Scale-out: how atf's work speeds up with more worker processes.

--part folds: the demo LSTM experiment (configs/demo_experiment.yaml) widened to 2 assets x 2 timeframes, its fold
tasks run serially (PyTorch's default threads, then one thread, to tell threading from parallelism), on a pool of 2 processes and on a local Ray instance with 2 CPUs (one
thread per task): wall time of the fold phase (tuning, refits and test decisions of every fold; the reports after it are
the same serial work for all three), speedup over serial, and proof that the stitched out-of-sample returns are equal.
Ray's start-up is timed apart (it is paid once per process).

--part trials: trials per minute on one Optuna study with 1, 2 and 4 worker processes (`tune(n_workers=...)`), on a
JournalFile storage and on a throwaway PostgreSQL 15 cluster (started and removed by tests/pg_cluster.py, as in the
tests). The objective is real and CPU-bound: atf's MLP learner on AAPL daily features (2004-2012), trained on the
first walk-forward fold's training bars and scored by validation loss, one torch thread per worker. "wall" counts the
whole `tune` call (spawning workers, their imports and one warm-up fit each included); "steady" counts from the
first trial's start to the last trial's end. One worker runs in this process, already warmed up.

    python benchmarks/bench_scale.py --part trials [--trials 32] [--epochs 15] [--workers 1 2 4]
    python benchmarks/bench_scale.py --part folds
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))      # pg_cluster: one throwaway-PostgreSQL helper

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
         "hidden": {"type": "int", "low": 16, "high": 64, "step": 16}, "dropout": {"type": "float", "low": 0.0, "high": 0.5}}


class FoldObjective:
    "atf's MLP on AAPL's first walk-forward fold, as a picklable callable: each worker builds the data on its first call."
    def __init__(self, epochs: int):
        self.epochs, self.run = epochs, None

    def __getstate__(self) -> dict:
        return {"epochs": self.epochs}                            # workers rebuild the data; only the epochs travel

    def __setstate__(self, state: dict) -> None:                  # in a worker, before its first trial
        self.epochs, self.run = state["epochs"], None
        self.warm_up()

    def warm_up(self) -> None:
        "Build the data and train once outside the study: imports, data and torch's first-call costs are paid here."
        if self.run is None: self.run = self._build()
        self.run({"lr": 1e-3, "hidden": 32, "dropout": 0.1}, lambda step, value: None)

    def __call__(self, params: dict, report) -> float:
        if self.run is None: self.run = self._build()
        return self.run(params, report)

    def _build(self):
        import torch
        torch.set_num_threads(1)                                 # one core per worker: worker counts compare fairly
        from atf.experiments import fold_objective, load_experiment, prepare
        from atf.features import direction_labels, make_features
        from atf.learners import FoldData
        from atf.validation import WalkForward
        cfg = load_experiment({"data": {"dataset": "us_stocks", "assets": ["AAPL"], "start": "2004-01-01", "end": "2012-12-31"},
                               "model": {"name": "mlp", "window": 10},
                               "train": {"max_epochs": self.epochs, "patience": self.epochs, "batch_size": 128},
                               "tuning": {"metric": "val_loss"}})
        df = prepare(cfg, "AAPL", "native")
        F, y = make_features(df, cfg.features), direction_labels(df["close"], 1)
        fold = WalkForward(train=1000, validation=300, test=300).split(df)[0]
        return fold_objective(FoldData(df, F, y, 252.0), fold.train, fold.validation, cfg)


def study_rates(url: str, name: str, objective: FoldObjective, trials: int, workers: int) -> tuple[float, float, int]:
    "Trials per minute of one study run to `trials` finished trials with `workers` processes: (wall, steady, finished)."
    from atf.tuning import tune
    t0 = time.perf_counter()
    res = tune(objective, SPACE, n_trials=trials, n_workers=workers, direction="minimize", storage=url,
               study_name=name, pruner="none", max_failures=3)
    wall = time.perf_counter() - t0
    import optuna
    from atf.tuning import open_storage
    done = [t for t in optuna.load_study(study_name=name, storage=open_storage(url)).trials if t.state.is_finished()]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    assert res.counts.get("COMPLETE", 0) >= trials, res.counts
    return len(done) / wall * 60, len(done) / span * 60, len(done)


def bench_trials(a: argparse.Namespace) -> None:
    from pg_cluster import PgCluster
    objective = FoldObjective(a.epochs)
    t0 = time.perf_counter(); objective.warm_up()
    print(f"trials: MLP on AAPL daily, {a.epochs} epochs a trial, {a.trials} trials a study, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          f"(warm-up call {time.perf_counter() - t0:.1f} s)")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        pg = PgCluster()
        try:
            for label, url in (("JournalFile", f"journal:{d}/bench.log"), ("PostgreSQL 15", pg.url)):
                for w in a.workers:
                    wall, steady, n = study_rates(url, f"w{w}", objective, a.trials, w)
                    rows.append((label, w, n, wall, steady))
        finally:
            pg.stop()
    print(f"  {'storage':14s} {'workers':>7s} {'trials':>6s} {'wall/min':>9s} {'steady/min':>11s} {'speedup (wall)':>15s}")
    for label, w, n, wall, steady in rows:
        base = next(r[3] for r in rows if r[0] == label and r[1] == a.workers[0])
        print(f"  {label:14s} {w:7d} {n:6d} {wall:9.1f} {steady:11.1f} {wall / base:14.2f}x")


def fold_phase(cfg, out: Path) -> tuple[float, dict]:
    "Seconds of the fold phase of `cfg` and each asset x timeframe's stitched out-of-sample returns."
    from atf.experiments import account, run_folds
    t0 = time.perf_counter()
    results = run_folds(cfg, out, progress=False)
    seconds = time.perf_counter() - t0
    return seconds, {k: account(cfg, *k, r)["oos"] for k, r in results.items()}


def bench_folds(a: argparse.Namespace) -> None:
    import torch
    import yaml
    from atf.experiments import load_experiment
    from atf.scaling import ExecutionConfig, make_executor
    root = Path(__file__).resolve().parents[1]
    base = yaml.safe_load((root / "configs" / "demo_experiment.yaml").read_text())
    base["data"]["assets"], base["memory_bank"], base["tearsheet"] = ["AAPL", "MSFT"], None, False
    runs, rows = {}, []
    with tempfile.TemporaryDirectory() as d:
        threads = torch.get_num_threads()
        for name, execution in (("serial", {}), ("serial, 1 thread", {}), ("processes", {"executor": "processes", "workers": 2}),
                                ("ray", {"executor": "ray", "workers": 2})):
            cfg = load_experiment({**base, "output_dir": d, "execution": execution or {"executor": "serial"}})
            torch.set_num_threads(1 if name == "serial, 1 thread" else threads)   # apart: what threads do, what workers do
            start = 0.0
            if name == "ray":                                   # Ray's start-up, timed apart
                t0 = time.perf_counter(); make_executor(cfg.execution).connect(); start = time.perf_counter() - t0
            seconds, runs[name] = fold_phase(cfg, Path(d) / name.replace(", ", "-").replace(" ", "-"))
            rows.append((name, seconds, start))
    print(f"folds: demo LSTM experiment on AAPL and MSFT x native and 1W bars, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  {'executor':16s} {'fold phase s':>12s} {'speedup':>8s} {'start-up s':>10s} {'OOS returns equal to serial':>28s}")
    for name, seconds, start in rows:
        equal = all(runs[name][k].equals(runs["serial"][k]) for k in runs["serial"])
        print(f"  {name:16s} {seconds:12.1f} {rows[0][1] / seconds:7.2f}x {start:10.1f} {str(equal):>28s}")


PARTS = {"trials": bench_trials, "folds": bench_folds}          # part name -> function(args); each part prints its own table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=sorted(PARTS), action="append", help="which part to run (repeatable); default: all")
    ap.add_argument("--trials", type=int, default=32, help="finished trials per study (--part trials)")
    ap.add_argument("--epochs", type=int, default=15, help="training epochs per trial")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker process counts to compare")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    for part in a.part or list(PARTS): PARTS[part](a)


if __name__ == "__main__":
    main()
