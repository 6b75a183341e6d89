"""Backtest speed: atf vs vectorbt vs backtesting.py on the same long/flat SMA-crossover strategies.

A grid of SMA pairs over a long synthetic price series is run by atf and by vectorbt (same signals,
same 10 bp fee, execution at the signal bar's close, all-in sizing); one pair on real daily data is
also run by backtesting.py, which is too slow for the grid. Prints bar-strategies per second, the
speed ratios and the largest relative difference in final equity.

    python benchmarks/bench_backtest.py [--bars 1000000] [--fast 5,10,...] [--repeat 3]
"""
from __future__ import annotations

import argparse
import gc
import time
import warnings

import numpy as np
import pandas as pd

from atf.backtest import backtest
from atf.data import load_dataset
from atf.strategies import sma_crossover, sma_grid_positions, sma_pairs

FAST = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50)
SLOW = (60, 80, 100, 120, 150, 180, 200, 250, 300, 400)


def synthetic_prices(n: int, seed: int = 0, half_life: float = 2_000.0, vol: float = 0.01) -> pd.Series:
    "A long price series whose log follows a slow mean-reverting walk: 1% daily moves, prices stay near 100."
    rng = np.random.default_rng(seed)
    theta, shocks = np.log(2) / half_life, rng.normal(0.0, vol, n)
    x = np.empty(n); level = 0.0
    for i in range(n):                  # an AR(1) in log price; a plain random walk would drift to 1e+-90 over 1M bars
        level += -theta * level + shocks[i]; x[i] = level
    return pd.Series(100 * np.exp(x), index=pd.bdate_range("1900-01-01", periods=n), name="close")


def best_of(fn, repeat: int) -> tuple[float, object]:
    "Fastest wall time of `repeat` runs, and the last result (memory collected between runs)."
    times, out = [], None
    for _ in range(repeat):
        out = None; gc.collect()
        t0 = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t0)
    return min(times), out


# Over 1,000,000 bars some strategies lose 100+ log points to fees; vectorbt's cash checks use absolute tolerances
# (about 1e-12), so both engines start from the same very large capital to keep every account far above them.
CAPITAL = 1e40


def run_atf(close: pd.Series, pairs, fee_bps: float) -> np.ndarray:
    pos = sma_grid_positions(close.to_numpy(), pairs)
    return backtest(close.to_numpy(), pos, fee_bps=fee_bps, initial_capital=CAPITAL).final_equity.to_numpy()


def run_vectorbt(close: pd.Series, pairs, fee_bps: float) -> np.ndarray:
    import vectorbt as vbt
    pos = sma_grid_positions(close.to_numpy(), pairs)
    prev = np.vstack([np.zeros((1, pos.shape[1])), pos[:-1]])
    entries, exits = (pos > 0) & (prev == 0), (pos == 0) & (prev > 0)
    pf = vbt.Portfolio.from_signals(close.to_numpy()[:, None], entries, exits, fees=fee_bps / 1e4, init_cash=CAPITAL,
                                    size=np.inf, freq="1D")
    return np.asarray(pf.value())[-1]          # final_value() = init_cash + summed trade PnL loses precision


def run_backtesting_py(df: pd.DataFrame, fast: int, slow: int, fee_bps: float) -> float:
    "backtesting.py with fractional units, close execution and the same fee."
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest

    class Cross(Strategy):
        def init(self):
            self.pos = self.I(lambda c: sma_crossover(np.asarray(c), fast, slow), self.data.Close)

        def next(self):
            if self.pos[-1] > 0 and not self.position: self.buy()
            elif self.pos[-1] == 0 and self.position: self.position.close()

    data = df.rename(columns=str.title)
    bt = FractionalBacktest(data, Cross, cash=1_000_000, commission=fee_bps / 1e4, trade_on_close=True,
                            finalize_trades=True, fractional_unit=1e-8)
    return float(bt.run()["Equity Final [$]"]) / 1_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=1_000_000, help="bars in the synthetic grid series")
    ap.add_argument("--fee-bps", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine; the fastest counts")
    ap.add_argument("--skip-backtesting-py", action="store_true")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    pairs = sma_pairs(FAST, SLOW)
    close = synthetic_prices(a.bars)
    work = a.bars * len(pairs)
    print(f"grid: {len(pairs)} SMA pairs x {a.bars:,} bars = {work:,} bar-strategies, fee {a.fee_bps} bp")

    run_vectorbt(close.iloc[:2000], pairs[:2], a.fee_bps)          # compile vectorbt's numba kernels first
    t_atf, eq_atf = best_of(lambda: run_atf(close, pairs, a.fee_bps), a.repeat)
    # vectorbt peaks near 10 GB on this grid and keeps caches between runs: one timed run (it is the slower engine)
    t_vbt, eq_vbt = best_of(lambda: run_vectorbt(close, pairs, a.fee_bps), 1)
    diff = np.max(np.abs(eq_atf / eq_vbt - 1))
    print(f"  atf       {t_atf:8.3f} s  {work / t_atf:14,.0f} bar-strategies/s")
    print(f"  vectorbt  {t_vbt:8.3f} s  {work / t_vbt:14,.0f} bar-strategies/s")
    print(f"  atf / vectorbt speed ratio: {t_vbt / t_atf:.2f}x")
    print(f"  largest relative difference in final equity (atf vs vectorbt): {diff:.2e}")

    if not a.skip_backtesting_py:
        df = load_dataset("us_stocks", "AAPL")
        fast, slow = 20, 100
        t_bt, eq_bt = best_of(lambda: run_backtesting_py(df, fast, slow, a.fee_bps), 1)
        one = lambda: backtest(df["close"], sma_crossover(df["close"], fast, slow), fee_bps=a.fee_bps).final_equity
        t_one, eq_one = best_of(one, max(a.repeat, 5))
        n = len(df)
        print(f"\nreal data: us_stocks/AAPL daily, {n:,} bars, SMA {fast}/{slow}")
        print(f"  atf           {t_one * 1e3:9.3f} ms  {n / t_one:14,.0f} bar-strategies/s")
        print(f"  backtesting.py{t_bt * 1e3:9.1f} ms  {n / t_bt:14,.0f} bar-strategies/s")
        print(f"  atf / backtesting.py speed ratio (one pair): {t_bt / t_one:,.0f}x; "
              f"grid throughput ratio: {(work / t_atf) / (n / t_bt):,.0f}x")
        print(f"  relative difference in final equity (atf vs backtesting.py): {abs(eq_one / eq_bt - 1):.2e}")


if __name__ == "__main__":
    main()
