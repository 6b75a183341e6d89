"""Environment speed: atf's TradingEnv vs gym-anytrading's StocksEnv, same real data, same random actions.

Both step through the GOOGL daily file that ships with gym-anytrading (2,335 bars), one full episode after
another, with a seeded random policy; the figure is environment steps per second (policy cost excluded).

    python benchmarks/bench_env.py [--steps 200000] [--window 10]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def steps_per_second(env, n_steps: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, env.action_space.n, n_steps)
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(int(a))
        if term or trunc: env.reset()
    return n_steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--window", type=int, default=10)
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    from gym_anytrading.datasets import STOCKS_GOOGL
    from gym_anytrading.envs import StocksEnv
    from atf.data import load_dataset
    from atf.envs import TradingEnv
    df = load_dataset("googl_daily")
    assert len(df) == len(STOCKS_GOOGL)
    ours = TradingEnv(df, window=a.window, action="discrete2", fee_bps=10)
    theirs = StocksEnv(df=STOCKS_GOOGL, window_size=a.window, frame_bound=(a.window, len(STOCKS_GOOGL)))
    s_ours = steps_per_second(ours, a.steps)
    s_theirs = steps_per_second(theirs, a.steps)
    print(f"GOOGL daily ({len(df):,} bars), window {a.window}, {a.steps:,} random steps each")
    print(f"  atf TradingEnv          {s_ours:12,.0f} steps/s  (features x window + position, exact costs)")
    print(f"  gym-anytrading StocksEnv{s_theirs:12,.0f} steps/s")
    print(f"  atf / gym-anytrading: {s_ours / s_theirs:.1f}x")


if __name__ == "__main__":
    main()
