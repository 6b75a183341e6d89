"""atf.metrics against quantstats and empyrical-reloaded on real data, where conventions match (1e-9)."""
import numpy as np
import pandas as pd
import pytest

from atf import metrics as m

qs = pytest.importorskip("quantstats")
ep = pytest.importorskip("empyrical")
TOL = dict(rtol=1e-9, atol=1e-12)


@pytest.fixture(params=["SPX", "AAPL", "AMD", "KO", "XOM"])
def returns(request, spx_returns, stock_returns) -> pd.Series:
    r = spx_returns if request.param == "SPX" else stock_returns[request.param]
    assert m.infer_periods_per_year(r.index) == 252
    return r


def test_sharpe_sortino_match_both_peers(returns):
    assert np.isclose(m.sharpe(returns), qs.stats.sharpe(returns, rf=0.0, periods=252), **TOL)
    assert np.isclose(m.sharpe(returns), ep.sharpe_ratio(returns), **TOL)
    assert np.isclose(m.sortino(returns), qs.stats.sortino(returns, rf=0, periods=252), **TOL)
    assert np.isclose(m.sortino(returns), ep.sortino_ratio(returns), **TOL)


def test_annual_rf_converted_like_quantstats(returns):
    rf = 0.03
    assert np.isclose(m.sharpe(returns, rf=rf), qs.stats.sharpe(returns, rf=rf, periods=252), **TOL)
    # empyrical takes rf per period: give it atf's conversion and the two agree
    assert np.isclose(m.sharpe(returns, rf=rf), ep.sharpe_ratio(returns, risk_free=m.per_period_rate(rf, 252)), **TOL)


def test_growth_volatility_calmar(returns):
    assert np.isclose(m.cagr(returns), qs.stats.cagr(returns, rf=0.0, compounded=True, periods=252), **TOL)
    assert np.isclose(m.cagr(returns), ep.annual_return(returns), **TOL)
    assert np.isclose(m.annual_volatility(returns), qs.stats.volatility(returns, periods=252), **TOL)
    assert np.isclose(m.annual_volatility(returns), ep.annual_volatility(returns), **TOL)
    assert np.isclose(m.calmar(returns), ep.calmar_ratio(returns), **TOL)


def test_max_drawdown_from_initial_capital(returns):
    assert np.isclose(m.max_drawdown(returns), qs.stats.max_drawdown(returns), **TOL)
    assert np.isclose(m.max_drawdown(returns), ep.max_drawdown(returns), **TOL)


def test_first_bar_loss_is_a_drawdown_for_all_three():
    r = pd.Series([-0.10, 0.05, 0.02], index=pd.bdate_range("2024-01-01", periods=3))
    assert np.isclose(m.max_drawdown(r), -0.10)                  # measured from the initial capital
    assert np.isclose(qs.stats.max_drawdown(r), -0.10)
    assert np.isclose(ep.max_drawdown(r), -0.10)


def test_distribution_matches(returns):
    d = m.pnl_distribution(returns)
    assert np.isclose(d["var"], ep.value_at_risk(returns, cutoff=0.05), **TOL)
    assert np.isclose(d["cvar"], ep.conditional_value_at_risk(returns, cutoff=0.05), **TOL)
    assert np.isclose(d["skew"], qs.stats.skew(returns), **TOL)
    assert np.isclose(d["kurtosis"], qs.stats.kurtosis(returns), **TOL)
    assert np.isclose(m.hit_rate(returns), qs.stats.win_rate(returns), **TOL)


def test_nan_policies_reproduce_each_peer(spx_returns):
    r = spx_returns.copy()
    r.iloc[[10, 500, 3000]] = np.nan
    with pytest.raises(ValueError, match="3 NaN value"):
        m.sharpe(r)
    # quantstats 0.0.86 and empyrical both skip missing bars in the ratios, volatility and drawdown: atf's "drop"
    for ours, theirs in [(m.sharpe, ep.sharpe_ratio), (m.sortino, ep.sortino_ratio),
                         (m.annual_volatility, ep.annual_volatility), (m.max_drawdown, ep.max_drawdown)]:
        assert np.isclose(ours(r, nan_policy="drop"), theirs(r), **TOL), ours.__name__
    assert np.isclose(m.sharpe(r, nan_policy="drop"), qs.stats.sharpe(r, periods=252), **TOL)
    # "zero" (a flat bar) is a different, explicit claim and gives a different number
    assert not np.isclose(m.sharpe(r, nan_policy="zero"), m.sharpe(r, nan_policy="drop"), **TOL)


def test_empyrical_compounds_nan_as_zero_in_growth(spx_returns):
    "empyrical's annual_return and calmar_ratio count a NaN bar as a zero return (atf 'zero'); quantstats drops it."
    from atf.data import load_dataset
    goog = load_dataset("us_stocks", "GOOG")["close"].pct_change().dropna()
    for r in (spx_returns.copy(), goog.copy()):
        r.iloc[[10, 200, 800, 1500]] = np.nan
        zero, drop = m.cagr(r, nan_policy="zero"), m.cagr(r, nan_policy="drop")
        assert not np.isclose(zero, drop, **TOL)
        assert np.isclose(ep.annual_return(r), zero, **TOL) and np.isclose(ep.calmar_ratio(r), m.calmar(r, nan_policy="zero"), **TOL)
        assert np.isclose(qs.stats.cagr(r, periods=252), drop, **TOL)
        assert np.isclose(qs.stats.calmar(r, periods=252), m.calmar(r, nan_policy="drop"), **TOL)


def test_summary_agrees_with_single_metrics(returns):
    s = m.summary(returns)
    for name, fn in [("sharpe", m.sharpe), ("sortino", m.sortino), ("cagr", m.cagr), ("calmar", m.calmar),
                     ("max_drawdown", m.max_drawdown), ("annual_volatility", m.annual_volatility)]:
        assert np.isclose(s[name], fn(returns), **TOL), name
