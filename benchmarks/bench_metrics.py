"""Metric speed: atf.metrics.summary vs quantstats and empyrical-reloaded on the same 1,000,000 returns.

Each library computes the metrics it shares with atf's summary (Sharpe, Sortino, max drawdown, CAGR,
volatility, Calmar, VaR, CVaR, skew, kurtosis, hit rate); atf computes its whole summary (30+ figures).
Prints wall time, the ratios, and the largest relative difference on the shared metrics.

    python benchmarks/bench_metrics.py [--n 1000000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import pandas as pd

from atf.metrics import summary


def returns_series(n: int, seed: int = 0) -> pd.Series:
    "Fat-tailed daily-like returns on a business-day index."
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, n) * 0.006 + 0.0003
    return pd.Series(r, index=pd.bdate_range("1800-01-01", periods=n), name="r")


def best_of(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t0)
    return min(times), out


def atf_metrics(r: pd.Series) -> dict:
    s = summary(r, periods_per_year=252)
    return {"sharpe": s["sharpe"], "sortino": s["sortino"], "max_drawdown": s["max_drawdown"], "cagr": s["cagr"],
            "volatility": s["annual_volatility"], "calmar": s["calmar"], "var": s["bar_var"], "cvar": s["bar_cvar"],
            "skew": s["bar_skew"], "kurtosis": s["bar_kurtosis"], "hit_rate": s["hit_rate"]}


def quantstats_metrics(r: pd.Series) -> dict:
    import quantstats as qs
    st = qs.stats
    return {"sharpe": st.sharpe(r, periods=252), "sortino": st.sortino(r, periods=252),
            "max_drawdown": st.max_drawdown(r), "cagr": st.cagr(r, periods=252), "volatility": st.volatility(r, periods=252),
            "calmar": st.calmar(r, periods=252), "skew": st.skew(r), "kurtosis": st.kurtosis(r), "hit_rate": st.win_rate(r)}


def empyrical_metrics(r: pd.Series) -> dict:
    import empyrical as ep
    return {"sharpe": ep.sharpe_ratio(r), "sortino": ep.sortino_ratio(r), "max_drawdown": ep.max_drawdown(r),
            "cagr": ep.annual_return(r), "volatility": ep.annual_volatility(r), "calmar": ep.calmar_ratio(r),
            "var": ep.value_at_risk(r), "cvar": ep.conditional_value_at_risk(r)}


def max_rel_diff(a: dict, b: dict) -> tuple[float, str]:
    diffs = {k: abs(float(b[k]) / float(a[k]) - 1) for k in b if k in a}
    worst = max(diffs, key=diffs.get)
    return diffs[worst], worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="number of returns")
    ap.add_argument("--repeat", type=int, default=3, help="runs per library; the fastest counts")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    r = returns_series(a.n)
    print(f"{a.n:,} daily returns")
    t_atf, m_atf = best_of(lambda: atf_metrics(r), a.repeat)
    # quantstats caches prepared returns by content; a fresh copy each run keeps the timing honest
    t_qs, m_qs = best_of(lambda: quantstats_metrics(r.copy() + 0.0), a.repeat)
    t_ep, m_ep = best_of(lambda: empyrical_metrics(r), a.repeat)
    print(f"  atf summary (all {len(summary(r.iloc[:300], periods_per_year=252))} figures) {t_atf:8.3f} s")
    print(f"  quantstats (11 shared metrics)        {t_qs:8.3f} s   atf is {t_qs / t_atf:6.1f}x faster")
    print(f"  empyrical-reloaded (8 shared metrics) {t_ep:8.3f} s   atf is {t_ep / t_atf:6.1f}x faster")
    d, k = max_rel_diff(m_atf, m_qs)
    print(f"  largest relative difference vs quantstats: {d:.1e} ({k})")
    d, k = max_rel_diff(m_atf, m_ep)
    print(f"  largest relative difference vs empyrical:  {d:.1e} ({k})")


if __name__ == "__main__":
    main()
