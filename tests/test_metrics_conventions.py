"""atf.metrics conventions that peers do not pin down: zero volatility, periods per year, impossible returns and ruin."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atf import metrics as m
from atf.data import load_dataset, resample_ohlcv

BDAYS = pd.bdate_range("2021-01-01", periods=252)


# A1: a standard deviation that is zero to within floating error is zero

@pytest.mark.parametrize("c", [0.001, 0.0003, 1 / 3, -0.002, 0.05])
def test_constant_returns_have_no_sharpe(c):
    flat = pd.Series(np.full(252, c), index=BDAYS)
    s = m.summary(flat)
    assert np.isnan(m.sharpe(flat)) and np.isnan(s["sharpe"])
    assert m.annual_volatility(flat) == 0 and s["annual_volatility"] == 0 and s["bar_std"] == 0
    assert np.isnan(s["bar_skew"]) and np.isnan(s["bar_kurtosis"])
    if c > 0: assert np.isnan(m.sortino(flat)) and np.isnan(s["sortino"])


def test_the_residue_is_real_and_not_zero():
    "The case of the issue: numpy leaves 3.4e-18 of std, which a plain `sd > 0` test divides by."
    assert 0 < np.std(np.full(252, 0.001), ddof=1) < 1e-16


def test_steadily_compounding_price_has_no_sharpe():
    r = pd.Series(100 * 1.0004 ** np.arange(600), index=pd.bdate_range("2020-01-01", periods=600)).pct_change().dropna()
    assert r.std() > 0                                   # floating noise of ~1e-16 around 0.0004
    assert np.isnan(m.sharpe(r)) and np.isnan(m.summary(r)["sharpe"])


def test_cash_earning_the_risk_free_rate_has_no_excess_ratio():
    cash = pd.Series(m.per_period_rate(0.03, 252), index=BDAYS)
    assert np.isnan(m.sharpe(cash, rf=0.03)) and np.isnan(m.sortino(cash, rf=0.03))
    assert np.isnan(m.summary(cash, rf=0.03)[["sharpe", "sortino"]]).all()


def test_small_real_volatility_is_kept():
    r = pd.Series(0.0004 + 1e-9 * np.random.default_rng(0).standard_normal(252), index=BDAYS)
    assert np.isfinite(m.sharpe(r)) and m.sharpe(r) > 1e5
    assert np.isclose(m.sortino([-0.01] * 10, periods_per_year=252), -np.sqrt(252))   # a constant loss is a real downside


# A2: periods per year for any bar spacing

@pytest.fixture(scope="module")
def nvda() -> pd.DataFrame:
    return load_dataset("nvda_daily")


@pytest.mark.parametrize("rule", ["2D", "W", "2W", "ME", "QE"])
def test_nvda_sharpe_does_not_depend_on_bar_size(nvda, rule):
    daily = m.sharpe(nvda["close"].pct_change().dropna())
    r = resample_ohlcv(nvda, rule)["close"].pct_change().dropna()
    assert 0.9 < m.sharpe(r) / daily < 1.1, (rule, m.infer_periods_per_year(r.index))


@pytest.mark.parametrize("rule,P", [("W", 52), ("2W", 26), ("ME", 12), ("QE", 4), ("6ME", 2), ("YE", 1)])
def test_inferred_calendar_bars_match_the_rule(nvda, rule, P):
    idx = resample_ohlcv(nvda, rule).index
    assert m.infer_periods_per_year(idx) == m.periods_per_year_from_rule(rule) == P
    assert m.infer_periods_per_year(idx, rule=rule) == P


def test_two_day_bars_on_an_exchange_are_counted(nvda):
    idx = resample_ohlcv(nvda, "2D").index
    P = m.infer_periods_per_year(idx)
    years = (idx[-1] - idx[0]).days / 365.25
    assert abs(P - (len(idx) - 1) / years) < 0.01 and 145 < P < 160
    assert m.infer_periods_per_year(idx, rule="2D") == P         # a clock-time rule cannot state it: counted
    with pytest.raises(ValueError, match="always_open"):
        m.periods_per_year_from_rule("2D")


def test_eurusd_daily_with_sunday_bars_is_counted():
    idx = resample_ohlcv(load_dataset("eurusd_1h"), "1D").index
    assert (idx.day_of_week == 6).mean() > 0.1                   # a short Sunday bar each week
    assert 305 < m.infer_periods_per_year(idx) < 325


def test_crypto_two_day_bars_match_the_always_open_rule():
    idx = resample_ohlcv(load_dataset("btc_15m"), "2D").index
    assert abs(m.infer_periods_per_year(idx) / m.periods_per_year_from_rule("2D", always_open=True) - 1) < 0.01


@pytest.mark.parametrize("rule,P", [("Q", 4), ("QE-MAR", 4), ("2W", 26), ("W-FRI", 52), ("M", 12), ("MS", 12),
                                    ("SME", 24), ("B", 252), ("2B", 126), ("A", 1), ("3ME", 4)])
def test_rule_table(rule, P):
    assert m.periods_per_year_from_rule(rule) == P


@pytest.mark.parametrize("rule,P", [("D", 365), ("2D", 182.5), ("1h", 8760), ("4h", 2190), ("15min", 35040)])
def test_clock_rules_for_markets_that_never_close(rule, P):
    assert m.periods_per_year_from_rule(rule, always_open=True) == P


def test_daily_data_keeps_its_calendar():
    assert m.infer_periods_per_year(pd.bdate_range("2020-01-01", periods=5)) == 252   # too short to count: calendar
    assert m.infer_periods_per_year(pd.date_range("2020-01-01", periods=400, freq="D", tz="America/New_York")) == 365
    halted = pd.bdate_range("2010-01-01", "2019-12-31").delete(slice(1000, 1150))    # a 7-month halt in 10 years
    assert m.infer_periods_per_year(halted) == 252


# A4: impossible returns and ruin

BAD = pd.Series([0.05, -1.5, 0.02, 0.01], index=pd.bdate_range("2024-01-01", periods=4))


@pytest.mark.parametrize("fn", [m.max_drawdown, m.total_return, m.cagr, m.sharpe, m.sortino, m.annual_volatility,
                                m.calmar, m.hit_rate, m.drawdown, m.equity_curve, m.pnl_distribution, m.summary])
def test_a_return_below_minus_100pct_names_the_bar(fn):
    with pytest.raises(ValueError, match=r"below -100% at bar\(s\) \[1\] \(2024-01-02"):
        fn(BAD)


def test_below_minus_one_is_refused_whatever_the_nan_policy():
    r = pd.Series([np.nan, 0.01, -3.0, 0.02], index=pd.bdate_range("2024-01-01", periods=4))
    for policy in ("zero", "drop"):
        with pytest.raises(ValueError, match=r"bar\(s\) \[2\]"):
            m.summary(r, nan_policy=policy)


def test_ruin_ends_the_account():
    r = pd.Series([0.05, 0.1, -1.0, 0.02, 0.01, -0.03], index=pd.bdate_range("2024-01-01", periods=6))
    s = m.summary(r)
    assert s["ruined"] == 1 and s["ruin_bar"] == 2 and m.ruin_bar(r) == 2
    assert s["total_return"] == -1 and s["cagr"] == -1 and s["max_drawdown"] == -1 and s["calmar"] == -1
    assert s["max_drawdown_bars"] == 4 and s["n_bars"] == 6 and s["bar_n"] == 3
    lived = r.iloc[:3]
    for name, fn in [("sharpe", m.sharpe), ("sortino", m.sortino), ("annual_volatility", m.annual_volatility)]:
        assert s[name] == fn(lived) == fn(r), name
    assert s["hit_rate"] == m.hit_rate(r) == 2 / 3 and list(m.equity_curve(r)[2:]) == [0, 0, 0, 0]


def test_minus_one_with_floating_residue_is_ruin():
    r = np.array([0.1, -1.0 - 1e-15, 0.05])
    assert m.ruin_bar(r) == 1 and m.max_drawdown(r) == -1 and m.total_return(r) == -1
    assert m.summary(np.array([0.1, 0.05]), periods_per_year=252)["ruined"] == 0


def test_positions_may_be_levered_short():
    assert m.turnover([0, -2, -2, 1], periods_per_year=4) == 5 and m.exposure([0, -2, -2, 1]) == 0.75


# summary and the single functions agree on any admissible series, ruin included

finite_returns = st.lists(st.one_of(st.floats(-0.999, 2.0), st.just(-1.0), st.just(0.0)), min_size=0, max_size=60)


@settings(max_examples=300, deadline=None)
@given(finite_returns)
def test_summary_agrees_with_the_functions(values):
    r = np.array(values, dtype=float)
    s = m.summary(r, periods_per_year=252)
    for name, fn in [("sharpe", lambda x: m.sharpe(x, periods_per_year=252)),
                     ("sortino", lambda x: m.sortino(x, periods_per_year=252)),
                     ("annual_volatility", lambda x: m.annual_volatility(x, periods_per_year=252)),
                     ("cagr", lambda x: m.cagr(x, periods_per_year=252) if len(x) else np.nan),
                     ("calmar", lambda x: m.calmar(x, periods_per_year=252) if len(x) else np.nan),
                     ("max_drawdown", m.max_drawdown), ("max_drawdown_bars", m.max_drawdown_duration),
                     ("hit_rate", m.hit_rate)]:
        a, b = s[name], fn(r)
        assert (np.isnan(a) and np.isnan(b)) or np.isclose(a, b, rtol=1e-9, atol=1e-12), (name, a, b)
    assert s["max_drawdown"] >= -1
    if len(r):
        lived = r[:m.ruin_bar(r) + 1] if m.ruin_bar(r) is not None else r
        assert np.allclose([s[f"bar_p{p}"] for p in m.PERCENTILES], np.percentile(lived, m.PERCENTILES), rtol=0, atol=1e-15)
        k = int((len(lived) - 1) * 0.05)
        assert np.isclose(s["bar_cvar"], np.sort(lived)[:k + 1].mean(), rtol=1e-12, atol=1e-15)


# A5: the chapter states the peers' NaN conventions as they are

def test_chapter_states_empyrical_nan_convention():
    nb = json.loads(Path(__file__).parents[1].joinpath("nbs", "03_metrics.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "what quantstats and empyrical do" not in text
    peers = text[text.index("## Where atf differs"):]
    nan = peers[peers.index("**NaN**"):peers.index("**Risk-free rate**")]
    assert "annual_return" in nan and "calmar_ratio" in nan and '"zero"' in nan


@pytest.mark.parametrize("n", [m.BLOCK - 1, m.BLOCK, m.BLOCK + 1, 3 * m.BLOCK + 5])
def test_blocked_passes_equal_the_plain_formulas(n):
    "summary walks long series block by block; the result is the whole-array formula's, block edges included."
    r = np.clip(np.random.default_rng(n).standard_t(3, n) * 0.01 + 0.0002, -0.5, 0.5)
    j = min(m.BLOCK - 2, n - 4)
    r[j:j + 4] = [0.3, -0.2, 0.01, 0.02]                             # a new high, then a drawdown across the first edge
    eq = np.cumprod(1 + r)
    dd = eq / np.maximum.accumulate(np.maximum(eq, 1.0)) - 1
    runs = np.diff(np.r_[0, (dd < 0).astype(np.int8), 0])
    longest = (np.flatnonzero(runs == -1) - np.flatnonzero(runs == 1)).max()
    assert (m.drawdown(r) == dd).all() and m.max_drawdown(r) == dd.min() and m.max_drawdown_duration(r) == longest
    s = m.summary(r, periods_per_year=252)
    assert s["max_drawdown"] == dd.min() and s["max_drawdown_bars"] == longest and s["total_return"] == eq[-1] - 1
    from scipy import stats
    assert np.isclose(s["sharpe"], r.mean() / r.std(ddof=1) * np.sqrt(252), rtol=1e-12)
    assert np.isclose(s["sortino"], r.mean() / np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(252), rtol=1e-12)
    assert np.allclose([s["bar_skew"], s["bar_kurtosis"]], [stats.skew(r, bias=False), stats.kurtosis(r, bias=False)], rtol=1e-10)
    assert s["hit_rate"] == (r > 0).sum() / (r != 0).sum()


def test_rolling_sharpe_reads_floating_residue_as_no_volatility():
    "The report's rolling Sharpe follows atf.metrics: a constant return has no Sharpe, not 1e16."
    from atf.reports import rolling_sharpe
    price = 100 * 1.0007 ** np.arange(301)                    # a price compounding at a constant rate
    r = pd.Series(np.diff(price) / price[:-1], index=pd.bdate_range("2021-01-01", periods=300))
    assert r.rolling(20).std().dropna().gt(0).any()          # the residue is there (pandas' rolling std)...
    assert rolling_sharpe(r, 20, 252).dropna().empty          # ...and is not read as volatility
