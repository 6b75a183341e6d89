"""Backtest semantics: exact accounting against vectorbt, trades, 2-D, and clear errors."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from atf.backtest import backtest
from atf.data import load_dataset
from atf.strategies import sma_crossover, sma_grid_positions, sma_pairs


@pytest.fixture(scope="module")
def aapl() -> pd.Series:
    return load_dataset("us_stocks", "AAPL")["close"]


def test_long_flat_matches_vectorbt_signals(aapl):
    vbt = pytest.importorskip("vectorbt")
    pairs = sma_pairs([5, 20, 50], [100, 200])
    pos = sma_grid_positions(aapl, pairs)
    prev = np.vstack([np.zeros((1, pos.shape[1])), pos[:-1]])
    pf = vbt.Portfolio.from_signals(aapl.to_numpy()[:, None], (pos > 0) & (prev == 0), (pos == 0) & (prev > 0),
                                    fees=0.001, slippage=0.0005, init_cash=1.0, freq="1D")
    ours = backtest(aapl, pos, fee_bps=10, slippage_bps=5).final_equity.to_numpy()
    np.testing.assert_allclose(ours, np.asarray(pf.final_value()), rtol=1e-9)


def broker_reference(prices: np.ndarray, w: np.ndarray, fee: float, slip: float, every_bar: bool = True) -> np.ndarray:
    "Slow share-and-cash broker: fill at close x (1 +/- slippage), pay fee on fill notional, hold w of equity."
    cash, shares, out, last = 1.0, 0.0, [], 0.0
    for p, target in zip(prices, w):
        pre = cash + shares * p
        post = pre
        if not every_bar and target == last:       # on_change: hold the shares until the target changes
            out.append(pre)
            continue
        last = target
        for _ in range(60):                         # fixed point: the cost depends on the equity it leaves
            new_shares = target * post / p
            trade = new_shares - shares
            fill = p * (1 + slip) if trade > 0 else p * (1 - slip)
            new_cash = cash - trade * fill - abs(trade) * fill * fee
            post = new_cash + new_shares * p
        cash, shares = new_cash, new_shares
        out.append(post)
    return np.array(out)


def test_fractional_short_and_flips_match_a_share_and_cash_broker(aapl):
    "Drift rebalancing, shorts and flips: the closed form equals an explicit share/cash simulation."
    rng = np.random.default_rng(0)
    px = aapl.iloc[:600]
    w = rng.choice([-1.0, -0.5, 0.0, 0.3, 0.8, 1.0], size=len(px))
    w = np.repeat(w[::5], 5)[: len(px)]               # hold each target 5 bars: drift and rebalancing in between
    res = backtest(px, pd.Series(w, index=px.index), fee_bps=7, slippage_bps=3, rebalance="every_bar")
    np.testing.assert_allclose(res.equity_curve.to_numpy(), broker_reference(px.to_numpy(), w, 7e-4, 3e-4), rtol=1e-11)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), fee=st.floats(0, 30), slip=st.floats(0, 30), hold=st.integers(1, 8))
def test_on_change_holds_the_shares_like_a_broker(aapl, seed, fee, slip, hold):
    "rebalance='on_change' (the default) trades only when the target changes: a broker that holds its shares."
    rng = np.random.default_rng(seed)
    px = aapl.iloc[:300]
    w = rng.choice([-1.0, -0.5, 0.0, 0.3, 1.0], size=len(px))
    w = np.repeat(w[::hold], hold)[: len(px)]
    res = backtest(px, pd.Series(w, index=px.index), fee_bps=fee, slippage_bps=slip)
    ref = broker_reference(px.to_numpy(), w, fee / 1e4, slip / 1e4, every_bar=False)
    np.testing.assert_allclose(res.equity_curve.to_numpy(), ref, rtol=1e-11)
    held = w[1:] == w[:-1]
    assert (res.turnover.iloc[1:, 0].to_numpy()[held] == 0).all() and (res.costs.iloc[1:, 0].to_numpy()[held] == 0).all()
    assert np.isclose(np.prod(1 + res.trades["return"]) if len(res.trades) else 1.0, res.final_equity, rtol=1e-10)


def test_short_held_a_year_matches_vectorbt_and_differs_from_constant_weight():
    "AMZN SMA 20/100 long/short, no costs: on_change equals vectorbt's orders on change; every_bar is another strategy."
    vbt = pytest.importorskip("vectorbt")
    close = load_dataset("amzn_daily")["close"]
    sig = sma_crossover(close, 20, 100, allow_short=True)
    pf = vbt.Portfolio.from_orders(close, sig.where(sig != sig.shift(fill_value=0)), size_type="targetpercent",
                                   init_cash=1.0, freq="1D")
    held = backtest(close, sig).final_equity
    assert np.isclose(held, pf.final_value(), rtol=1e-10)
    assert held > 5 * backtest(close, sig, rebalance="every_bar").final_equity      # 116.6 vs 12.5: not a detail


def test_an_ohlcv_frame_means_its_close_for_every_strategy(aapl):
    bars = load_dataset("us_stocks", "AAPL").iloc[:300]
    pos = pd.DataFrame({f"s{i}": sma_crossover(bars["close"], 5 + i, 30) for i in range(6)})
    both = backtest(bars, pos, fee_bps=5)
    for c in pos:                                     # six strategies, none paired with open/high/low/volume
        assert np.isclose(both.final_equity[c], backtest(bars["close"], pos[c], fee_bps=5).final_equity, rtol=1e-14)
    with pytest.raises(ValueError, match="bar-field columns"):
        backtest(bars.assign(signal=1.0), pos)


@settings(max_examples=80, deadline=None)
@given(r=arrays(np.float64, 40, elements=st.floats(-0.15, 0.15)),
       w=arrays(np.float64, 40, elements=st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0])),
       fee=st.floats(0, 30), slip=st.floats(0, 30), rebalance=st.sampled_from(["on_change", "every_bar"]))
def test_trades_compound_to_total_growth(r, w, fee, slip, rebalance):
    p = 50 * np.cumprod(1 + r)
    try: res = backtest(p, w, fee, slip, rebalance=rebalance)
    except ValueError as e:                           # a held short can be wiped out by a run of rises: that is ruin
        assert "wiped out" in str(e); assume(False)
    growth = np.prod(1 + res.trades["return"]) if len(res.trades) else 1.0
    assert np.isclose(growth, res.final_equity, rtol=1e-10)
    assert (res.costs.to_numpy() >= -1e-15).all()


def test_costs_are_charged_on_traded_notional_only(aapl):
    hold = backtest(aapl, pd.Series(1.0, index=aapl.index), fee_bps=10)
    assert np.isclose(hold.costs.iloc[:, 0].sum(), 1 - 1 / 1.001)        # one all-in entry, nothing after
    assert np.isclose(hold.turnover.iloc[0, 0], 1 / 1.001) and hold.turnover.iloc[1:, 0].abs().max() < 1e-12


def test_two_dimensional_prices_pair_with_columns():
    panel = pd.DataFrame({a: load_dataset("sp500_stocks", a)["close"].iloc[-500:] for a in ("KO", "XOM")})
    both = backtest(panel, pd.DataFrame(1.0, index=panel.index, columns=panel.columns), fee_bps=5)
    for a in panel:
        one = backtest(panel[a], pd.Series(1.0, index=panel.index, name=a), fee_bps=5)
        assert np.isclose(both.final_equity[a], one.final_equity, rtol=1e-12)


@pytest.mark.parametrize("prices, positions, message", [
    ([100, -1, 102.0], [0, 1, 0.0], "prices has NaN/inf or non-positive values in 1 row"),
    ([100, 101, 102.0], [0, np.inf, 0.0], "positions has NaN/inf"),
    ([100, 101.0], [0, 1, 0.0], "prices have 2 bars but positions have 3"),
    ([100, 50.0], [3.0, 0.0], "equity wiped out at bar 1"),
    ([100, 101.0], [1.0, 0.0], None),
    ([100, 199.9], [-1.0, 0.0], "equity wiped out at bar 1, column 0: trading from weight"),
])
def test_bad_input_is_named(prices, positions, message):
    if message is None:
        with pytest.raises(ValueError, match=r"rebalance='daily': use one of \['on_change', 'every_bar'\]"):
            backtest(prices, positions, rebalance="daily")
        return
    with pytest.raises(ValueError, match=message):
        backtest(prices, positions, fee_bps=10, slippage_bps=10)


def test_misaligned_indexes_are_refused(aapl):
    with pytest.raises(ValueError, match="different indexes"):
        backtest(aapl, sma_crossover(aapl, 10, 50).iloc[1:])


def portfolio_broker(prices: np.ndarray, w: np.ndarray, fee: float, slip: float, every_bar: bool = True) -> np.ndarray:
    "Slow share-and-cash broker over several assets: every order fills at close x (1 +/- slippage) plus the fee."
    cash, shares, out, last = 1.0, np.zeros(prices.shape[1]), [], np.zeros(prices.shape[1])
    for p, target in zip(prices, w):
        post = cash + shares @ p
        if not every_bar and (target == last).all():     # on_change: hold every share until the weights change
            out.append(post)
            continue
        last = target
        for _ in range(100):                        # fixed point: the costs depend on the equity they leave
            new_shares = target * post / p
            trade = new_shares - shares
            fill = np.where(trade > 0, p * (1 + slip), p * (1 - slip))
            new_cash = cash - trade @ fill - np.abs(trade) @ fill * fee
            post = new_cash + new_shares @ p
        cash, shares = new_cash, new_shares
        out.append(post)
    return np.array(out)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), fee=st.floats(0, 30), slip=st.floats(0, 30), hold=st.integers(1, 6),
       rebalance=st.sampled_from(["on_change", "every_bar"]))
def test_portfolio_backtest_matches_a_share_and_cash_broker(seed, fee, slip, hold, rebalance):
    "One account over three real assets with longs, shorts and cash: the closed form equals explicit orders."
    from atf.backtest import backtest_portfolio
    from atf.data import load_dataset
    px = pd.DataFrame({a: load_dataset("us_stocks", a)["close"].iloc[:120] for a in ("AAPL", "IBM", "MSFT")})
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1, 1, (len(px), 3))
    w /= np.maximum(1.0, np.abs(w).sum(axis=1, keepdims=True))
    w = np.repeat(w[::hold], hold, axis=0)[: len(px)]
    res = backtest_portfolio(px, pd.DataFrame(w, px.index, px.columns), fee, slip, rebalance=rebalance)
    ref = portfolio_broker(px.to_numpy(), w, fee / 1e4, slip / 1e4, every_bar=rebalance == "every_bar")
    np.testing.assert_allclose(res.equity.to_numpy(), ref, rtol=1e-11)


def test_portfolio_backtest_names_bad_input():
    from atf.backtest import backtest_portfolio
    idx = pd.bdate_range("2024-01-01", periods=3)
    px = pd.DataFrame({"A": [1., 2, 3], "B": [1., 1, 1]}, index=idx)
    with pytest.raises(ValueError, match="weights has NaN/inf values in 1 row"):
        backtest_portfolio(px, pd.DataFrame({"A": [0.5, np.nan, 0], "B": 0.0}, index=idx))
    with pytest.raises(ValueError, match="columns"):
        backtest_portfolio(px, pd.DataFrame({"B": 0.0, "A": 0.0}, index=idx))
