"""Property tests: nothing at or before bar t depends on data after t."""
import numpy as np
import pandas as pd
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from atf.backtest import backtest
from atf.data import resample_ohlcv
from atf.strategies import sma_crossover

N = 60
returns_st = arrays(np.float64, N, elements=st.floats(-0.2, 0.2, allow_nan=False))
positions_st = arrays(np.float64, N, elements=st.floats(-1.5, 1.5, allow_nan=False))
costs_st = st.tuples(st.floats(0, 50), st.floats(0, 50))


def prices_from(r: np.ndarray) -> np.ndarray:
    return 100 * np.cumprod(1 + r)


@settings(max_examples=150, deadline=None)
@given(r=returns_st, shock=returns_st, w=positions_st, w_alt=positions_st, t=st.integers(0, N - 2), costs=costs_st,
       rebalance=st.sampled_from(["on_change", "every_bar"]))
def test_backtest_ignores_everything_after_t(r, shock, w, w_alt, t, costs, rebalance):
    "Changing prices AND positions after bar t changes no return, equity, cost, turnover or held weight up to t."
    fee, slip = costs
    p1 = prices_from(r)
    p2 = prices_from(np.r_[r[: t + 1], shock[t + 1:]])
    w2 = np.r_[w[: t + 1], w_alt[t + 1:]]
    try: a, b = backtest(p1, w, fee, slip, rebalance=rebalance), backtest(p2, w2, fee, slip, rebalance=rebalance)
    except ValueError as e:                          # a leveraged position held through a run of losses: ruin
        assert "wiped out" in str(e); assume(False)
    for field in ("returns", "equity", "costs", "turnover", "positions", "weights"):
        np.testing.assert_array_equal(getattr(a, field).iloc[: t + 1].to_numpy(), getattr(b, field).iloc[: t + 1].to_numpy())


@settings(max_examples=100, deadline=None)
@given(r=returns_st, shock=returns_st, t=st.integers(0, N - 2), fast=st.integers(1, 10), extra=st.integers(1, 20))
def test_rule_and_backtest_pipeline_is_causal(r, shock, t, fast, extra):
    "Positions from a causal rule, then the backtest: data after t changes nothing up to t."
    p1 = pd.Series(prices_from(r))
    p2 = pd.Series(prices_from(np.r_[r[: t + 1], shock[t + 1:]]))
    w1, w2 = sma_crossover(p1, fast, fast + extra), sma_crossover(p2, fast, fast + extra)
    np.testing.assert_array_equal(w1.iloc[: t + 1], w2.iloc[: t + 1])
    a, b = backtest(p1, w1, 10, 5), backtest(p2, w2, 10, 5)
    np.testing.assert_array_equal(a.equity.iloc[: t + 1].to_numpy(), b.equity.iloc[: t + 1].to_numpy())


@settings(max_examples=100, deadline=None)
@given(r=returns_st, w=positions_st, t=st.integers(1, N - 1), rebalance=st.sampled_from(["on_change", "every_bar"]))
def test_position_at_t_earns_bar_t_plus_1(r, w, t, rebalance):
    "The return of bar t is driven by the position decided at t-1, never by the one decided at t."
    p = prices_from(r)
    w_changed = w.copy(); w_changed[t] += 0.5
    try: a, b = backtest(p, w, rebalance=rebalance), backtest(p, w_changed, rebalance=rebalance)  # no costs
    except ValueError as e:                          # a leveraged position held through a run of losses: ruin
        assert "wiped out" in str(e); assume(False)
    np.testing.assert_array_equal(a.returns.to_numpy()[: t + 1], b.returns.to_numpy()[: t + 1])
    if t + 1 < N and abs(p[t + 1] / p[t] - 1) > 1e-12:
        assert a.returns.to_numpy()[t + 1, 0] != b.returns.to_numpy()[t + 1, 0]


@settings(max_examples=60, deadline=None)
@given(r=returns_st, shock=returns_st, cut=st.integers(4, N - 1))
def test_resampled_bars_use_nothing_after_their_close(r, shock, cut):
    "An hourly bar built from 15-minute bars does not change when later 15-minute bars change."
    idx = pd.date_range("2024-01-01", periods=N, freq="15min")
    def frame(ret):
        c = prices_from(ret)
        return pd.DataFrame({"open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": 1.0}, index=idx)
    a = resample_ohlcv(frame(r), "1h")
    b = resample_ohlcv(frame(np.r_[r[:cut], shock[cut:]]), "1h")
    done = a.index + pd.Timedelta("1h") <= idx[cut]           # hourly bars complete before the change
    pd.testing.assert_frame_equal(a[done], b.loc[a.index[done]])
