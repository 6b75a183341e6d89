"""Metric speed: atf.metrics.summary vs quantstats and empyrical-reloaded on the same 1,000,000 returns.

Each library computes the metrics it shares with atf's summary (Sharpe, Sortino, max drawdown, CAGR, volatility,
Calmar, VaR, CVaR, skew, kurtosis, hit rate); atf computes its whole summary (30+ figures) in one call, and each
shared metric through its single function too. The libraries run in turn, round after round (a shared machine drifts
by tens of percent over seconds, and alternating spreads that drift over all of them), each on a fresh copy of the
returns; every call is timed and the fastest round of each counts. Prints the per-metric times, the totals, the
ratios against the goals (summary >= 10x quantstats, faster than empyrical-reloaded on the metrics they share), and
the largest relative difference on the shared metrics.

    python benchmarks/bench_metrics.py [--n 1000000] [--repeat 7]
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import pandas as pd

from atf import metrics as am

P = 252


def returns_series(n: int, seed: int = 0) -> pd.Series:
    "Fat-tailed daily-like returns on a business-day index."
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, n) * 0.006 + 0.0003
    return pd.Series(r, index=pd.bdate_range("1800-01-01", periods=n), name="r")


def atf_summary(r: pd.Series) -> dict:
    return {"summary": lambda: am.summary(r, periods_per_year=P)}


SUMMARY_KEYS = {"sharpe": "sharpe", "sortino": "sortino", "max_drawdown": "max_drawdown", "cagr": "cagr",
                "volatility": "annual_volatility", "calmar": "calmar", "var": "bar_var", "cvar": "bar_cvar",
                "skew": "bar_skew", "kurtosis": "bar_kurtosis", "hit_rate": "hit_rate"}


def atf_single(r: pd.Series) -> dict:
    return {"sharpe": lambda: am.sharpe(r, periods_per_year=P), "sortino": lambda: am.sortino(r, periods_per_year=P),
            "max_drawdown": lambda: am.max_drawdown(r), "cagr": lambda: am.cagr(r, periods_per_year=P),
            "volatility": lambda: am.annual_volatility(r, periods_per_year=P),
            "calmar": lambda: am.calmar(r, periods_per_year=P),
            "var": lambda: am.pnl_distribution(r)["var"], "cvar": lambda: am.pnl_distribution(r)["cvar"],
            "skew": lambda: am.pnl_distribution(r)["skew"], "kurtosis": lambda: am.pnl_distribution(r)["kurtosis"],
            "hit_rate": lambda: am.hit_rate(r)}


def quantstats_metrics(r: pd.Series) -> dict:
    import quantstats as qs
    st = qs.stats
    return {"sharpe": lambda: st.sharpe(r, periods=P), "sortino": lambda: st.sortino(r, periods=P),
            "max_drawdown": lambda: st.max_drawdown(r), "cagr": lambda: st.cagr(r, periods=P),
            "volatility": lambda: st.volatility(r, periods=P), "calmar": lambda: st.calmar(r, periods=P),
            "skew": lambda: st.skew(r), "kurtosis": lambda: st.kurtosis(r), "hit_rate": lambda: st.win_rate(r)}


def empyrical_metrics(r: pd.Series) -> dict:
    import empyrical as ep
    return {"sharpe": lambda: ep.sharpe_ratio(r), "sortino": lambda: ep.sortino_ratio(r),
            "max_drawdown": lambda: ep.max_drawdown(r), "cagr": lambda: ep.annual_return(r),
            "volatility": lambda: ep.annual_volatility(r), "calmar": lambda: ep.calmar_ratio(r),
            "var": lambda: ep.value_at_risk(r), "cvar": lambda: ep.conditional_value_at_risk(r)}


LIBS = {"atf summary": atf_summary, "atf functions": atf_single, "quantstats": quantstats_metrics,
        "empyrical": empyrical_metrics}


def timed_round(make, r: pd.Series) -> tuple[dict, dict]:
    "One run of a library's metrics on a fresh copy of the returns: per-metric seconds and values."
    calls = make(r.copy())         # quantstats caches prepared returns by content: a fresh copy each round
    times, values = {}, {}
    for name, call in calls.items():
        t0 = time.perf_counter(); values[name] = call(); times[name] = time.perf_counter() - t0
    return times, values


def run(r: pd.Series, repeat: int) -> tuple[dict, dict]:
    "Alternate the libraries `repeat` rounds; keep each library's fastest round (by total) and its values."
    best, values = {}, {}
    for _ in range(repeat):
        for lib, make in LIBS.items():
            times, vals = timed_round(make, r)
            if lib not in best or sum(times.values()) < sum(best[lib].values()):
                best[lib], values[lib] = times, vals
    values["atf summary"] = {k: values["atf summary"]["summary"][v] for k, v in SUMMARY_KEYS.items()}
    return best, values


def max_rel_diff(a: dict, b: dict) -> tuple[float, str]:
    diffs = {k: abs(float(b[k]) / float(a[k]) - 1) for k in b if k in a}
    worst = max(diffs, key=diffs.get)
    return diffs[worst], worst


def report(best: dict, values: dict, n_figures: int) -> None:
    ms = lambda s: f"{s * 1e3:9.2f}" if s is not None else f"{'-':>9}"
    cols = ["atf functions", "quantstats", "empyrical"]
    print(f"  {'metric (ms)':14s}" + "".join(f"{c:>16s}" for c in cols))
    for k in SUMMARY_KEYS:
        print(f"  {k:14s}" + "".join(f"{ms(best[c].get(k)):>16s}" for c in cols))
    t_sum = sum(best["atf summary"].values())
    t_qs, t_ep = sum(best["quantstats"].values()), sum(best["empyrical"].values())
    ep_keys = list(best["empyrical"])
    t_fn_ep = sum(best["atf functions"][k] for k in ep_keys)
    print(f"\n  atf summary, all {n_figures} figures in one call  {ms(t_sum)} ms")
    print(f"  quantstats, {len(best['quantstats'])} shared metrics           {ms(t_qs)} ms   "
          f"summary is {t_qs / t_sum:5.1f}x faster (goal >= 10x)")
    print(f"  empyrical-reloaded, {len(ep_keys)} shared metrics    {ms(t_ep)} ms   "
          f"summary is {t_ep / t_sum:5.1f}x faster (goal > 1x)")
    print(f"  atf functions on empyrical's {len(ep_keys)}            {ms(t_fn_ep)} ms   "
          f"{t_ep / t_fn_ep:5.1f}x faster than empyrical")
    for lib in ("quantstats", "empyrical"):
        d, k = max_rel_diff(values["atf summary"], values[lib])
        print(f"  largest relative difference vs {lib:10s}: {d:.1e} ({k})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="number of returns")
    ap.add_argument("--repeat", type=int, default=7, help="alternating rounds; each library's fastest counts")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    r = returns_series(a.n)
    print(f"{a.n:,} daily returns, best of {a.repeat} alternating rounds")
    best, values = run(r, a.repeat)
    report(best, values, len(am.summary(r.iloc[:300], periods_per_year=P)))


if __name__ == "__main__":
    main()
