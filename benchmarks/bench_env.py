"""Environment speed: atf's TradingEnv and TradingVecEnv vs gym-anytrading's StocksEnv, same real data, same random actions.

Both step through the GOOGL daily file that ships with gym-anytrading (2,335 bars), one full episode after
another, with a seeded random policy; the figure is environment steps per second (policy cost excluded).
Single environments are stepped one call per step. Batched, N accounts advance per call: atf's TradingVecEnv
(NumPy over all N) against N StocksEnv copies in stable-baselines3's DummyVecEnv, which is how SB3 would batch them.

    python benchmarks/bench_env.py [--steps 200000] [--window 10] [--n-envs 1 16 64]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def steps_per_second(env, n_steps: int, seed: int = 0) -> float:
    "One gymnasium env, one step per call."
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, env.action_space.n, n_steps)
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(int(a))
        if term or trunc: env.reset()
    return n_steps / (time.perf_counter() - t0)


def vec_steps_per_second(venv, n_steps: int, seed: int = 0) -> float:
    "An SB3 VecEnv: n_steps environment steps in total, num_envs per call (resets are automatic)."
    calls = max(1, n_steps // venv.num_envs)
    actions = np.random.default_rng(seed).integers(0, venv.action_space.n, (calls, venv.num_envs))
    venv.reset()
    t0 = time.perf_counter()
    for a in actions: venv.step(a)
    return calls * venv.num_envs / (time.perf_counter() - t0)


def best_of(repeat: int, ours, theirs) -> tuple[float, float]:
    "Best rate of each over `repeat` alternating runs (on a shared machine the best run is the least disturbed)."
    a, b = [], []
    for _ in range(repeat): a.append(ours()); b.append(theirs())
    return max(a), max(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200_000, help="environment steps per measurement")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs per figure; the best of each is kept")
    ap.add_argument("--n-envs", type=int, nargs="+", default=[16, 64, 256], help="batch sizes for the vectorized runs")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    from gym_anytrading.datasets import STOCKS_GOOGL
    from gym_anytrading.envs import StocksEnv
    from stable_baselines3.common.vec_env import DummyVecEnv
    from atf.data import load_dataset
    from atf.envs import TradingEnv, TradingVecEnv
    df = load_dataset("googl_daily")
    assert len(df) == len(STOCKS_GOOGL)
    ours = dict(df=df, window=a.window, action="discrete2", fee_bps=10)
    theirs = lambda: StocksEnv(df=STOCKS_GOOGL, window_size=a.window, frame_bound=(a.window, len(STOCKS_GOOGL)))
    s_ours, s_theirs = best_of(a.repeat, lambda: steps_per_second(TradingEnv(**ours), a.steps),
                               lambda: steps_per_second(theirs(), a.steps))
    print(f"GOOGL daily ({len(df):,} bars), window {a.window}, {a.steps:,} random steps per run, best of {a.repeat} alternating runs")
    print(f"  one env per call      atf TradingEnv {s_ours:12,.0f}/s   gym-anytrading StocksEnv {s_theirs:10,.0f}/s   "
          f"ratio {s_ours / s_theirs:5.1f}x")
    for n in a.n_envs:
        v_ours, v_theirs = best_of(a.repeat, lambda: vec_steps_per_second(TradingVecEnv(n, seed=0, **ours), a.steps),
                                   lambda: vec_steps_per_second(DummyVecEnv([theirs] * n), a.steps))
        print(f"  {n:3d} envs per call    atf TradingVecEnv {v_ours:9,.0f}/s   StocksEnv x DummyVecEnv {v_theirs:11,.0f}/s   "
              f"ratio {v_ours / v_theirs:5.1f}x   (vs one StocksEnv: {v_ours / s_theirs:5.1f}x)")


if __name__ == "__main__":
    main()
