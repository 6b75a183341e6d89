"""Walk-forward splits: no test bar in or near its training data, exact tiling, and honest rule studies."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings, strategies as st

from atf.data import load_dataset
from atf.strategies import sma_grid_positions, sma_pairs
from atf.validation import WalkForward, folds_table, stitch, walk_forward_rule

splitters = st.builds(
    WalkForward, train=st.integers(5, 120), test=st.integers(1, 60), validation=st.integers(0, 40),
    expanding=st.booleans(), label_horizon=st.integers(0, 10), embargo=st.integers(0, 10))


def check_fold_invariants(wf: WalkForward, folds, n: int) -> None:
    for f in folds:
        assert len(f.train) and len(f.test)
        segments = [f.train] + ([f.validation] if len(f.validation) else []) + [f.test]
        for earlier, later in zip(segments, segments[1:]):
            assert later[0] - earlier[-1] > wf.gap          # at least purge + embargo bars in between
        assert not np.intersect1d(f.test, f.train).size and not np.intersect1d(f.test, f.validation).size
        assert f.test[0] - f.train[-1] > wf.gap and f.test.max() < n
        if not wf.expanding: assert len(f.train) == wf.train
    tests = np.concatenate([f.test for f in folds])
    assert np.array_equal(tests, np.arange(folds[0].test[0], n))   # every test bar exactly once, to the end


@settings(max_examples=300, deadline=None)
@given(wf=splitters, n=st.integers(50, 600))
def test_bar_count_splits(wf, n):
    try:
        folds = wf.split(n)
    except ValueError as e:
        assert "too few" in str(e)
        assume(False)
    check_fold_invariants(wf, folds, n)


@settings(max_examples=60, deadline=None)
@given(train=st.integers(60, 900), val=st.integers(0, 200), test=st.integers(20, 400),
       horizon=st.integers(0, 10), embargo=st.integers(0, 5), expanding=st.booleans())
def test_time_span_splits_on_real_calendar(train, val, test, horizon, embargo, expanding):
    idx = load_dataset("sp500_index").index[-2500:]
    wf = WalkForward(train=f"{train}D", validation=f"{val}D", test=f"{test}D", label_horizon=horizon,
                     embargo=embargo, expanding=expanding)
    try:
        folds = wf.split(idx)
    except ValueError:
        assume(False)
    for f in folds:
        segments = [f.train] + ([f.validation] if len(f.validation) else []) + [f.test]
        for earlier, later in zip(segments, segments[1:]):
            assert later[0] - earlier[-1] > wf.gap
        if not expanding: assert idx[f.train[-1]] - idx[f.train[0]] < pd.Timedelta(days=train)
    tests = np.concatenate([f.test for f in folds])
    assert np.array_equal(tests, np.arange(folds[0].test[0], tests[-1] + 1))
    assert len(idx) - 1 - tests[-1] < 400                     # tiles up to the last full test window


@pytest.mark.parametrize("kwargs, message", [
    (dict(train=0, test=5), "train must be a positive"),
    (dict(train=10, test=5, purge=1, label_horizon=3), "purge=1 is shorter than label_horizon=3"),
    (dict(train=10, test=5, step="5D"), "must both be bar counts or both time spans"),
])
def test_bad_splitters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WalkForward(**kwargs).split(pd.bdate_range("2020-01-01", periods=200))


def test_too_little_data_says_so():
    with pytest.raises(ValueError, match="27 bars are too few"):
        WalkForward(train=20, validation=5, test=5).split(27)   # needs 20+1+5+1 bars before a test


def test_stitch_refuses_overlap():
    a = pd.Series(1.0, index=pd.RangeIndex(0, 5)); b = pd.Series(1.0, index=pd.RangeIndex(4, 8))
    with pytest.raises(ValueError, match="overlap"):
        stitch([a, b])


def test_rule_study_selection_never_sees_test_bars():
    "Poisoning every bar outside train/validation cannot change any fold's chosen parameters."
    close = load_dataset("sp500_stocks", "JPM")["close"].loc["2000":"2012"]
    pairs = sma_pairs([5, 10, 20], [50, 100, 200])
    wf = WalkForward(train=750, validation=250, test=250)
    base = walk_forward_rule(close, sma_grid_positions(close, pairs), pairs, wf, fee_bps=5)
    for fold in wf.split(close):
        seen = np.r_[fold.train, fold.validation]
        poisoned = sma_grid_positions(close, pairs)
        unseen = np.setdiff1d(np.arange(len(close)), seen)
        poisoned[unseen] = np.random.default_rng(fold.number).choice([0.0, 1.0], size=(len(unseen), len(pairs)))
        # the chosen pair only depends on the selection bars: recompute that fold's choice with poisoned data
        single = WalkForward(train=750, validation=250, test=250)
        redo = walk_forward_rule(close, poisoned, pairs, single, fee_bps=5)
        assert redo.folds.loc[fold.number, "chosen"] == base.folds.loc[fold.number, "chosen"]


def test_positions_computed_on_full_history_equal_truncated_ones():
    "The rule is causal, so computing positions once on the full series equals computing them per test end."
    close = load_dataset("sp500_stocks", "KO")["close"].iloc[-1500:]
    pairs = sma_pairs([10, 20], [50, 100])
    full = sma_grid_positions(close, pairs)
    for fold in WalkForward(train=500, validation=200, test=200).split(close):
        end = fold.test[-1] + 1
        np.testing.assert_array_equal(sma_grid_positions(close.iloc[:end], pairs), full[:end])


def test_oos_series_covers_test_bars_once_and_benchmarks_same_bars():
    close = load_dataset("sp500_index")["close"].loc["2005":"2015"]
    pairs = sma_pairs([10, 50], [100, 200])
    study = walk_forward_rule(close, sma_grid_positions(close, pairs), pairs,
                              WalkForward(train="730D", validation="365D", test="182D"), fee_bps=2)
    t = study.folds
    assert study.oos_returns.index.equals(study.benchmark_returns.index)
    assert len(study.oos_returns) == t["test_bars"].sum() and study.oos_returns.index.is_unique
    expected = np.prod(1 + t["test_return"]) - 1
    assert np.isclose((1 + study.oos_returns).prod() - 1, expected)
    assert folds_table(study.splitter.split(close), close.index)["test_start"].is_monotonic_increasing


def test_stitched_out_of_sample_is_one_continuous_account():
    "GOOG weekly, 26-bar test folds: buy-and-hold is the price ratio less one entry; the strategy is one backtest."
    from atf.backtest import backtest
    from atf.data import load_dataset, resample_ohlcv
    from atf.strategies import sma_grid_positions, sma_pairs
    close = resample_ohlcv(load_dataset("us_stocks", "GOOG"), "1W")["close"]
    pairs = sma_pairs([5, 10], [20, 40])
    study = walk_forward_rule(close, sma_grid_positions(close, pairs), pairs,
                              WalkForward(train=104, validation=26, test=26), fee_bps=10, slippage_bps=5)
    span = study.benchmark_returns.index
    kb = (1 + 5e-4) * (1 + 1e-3) - 1
    assert len(study.folds) > 5
    assert abs(np.prod(1 + study.benchmark_returns) - close[span[-1]] / close[span[0]] / (1 + kb)) < 1e-12
    one = backtest(close.loc[span], study.oos_positions, fee_bps=10, slippage_bps=5)
    assert abs(np.prod(1 + study.oos_returns) - one.final_equity) < 1e-12
    # the folds' own returns multiply to the total, and fold k's last position earns fold k+1's first bar
    assert np.isclose(np.prod(1 + study.folds["test_return"]), one.final_equity, rtol=1e-12)
    first = study.folds["test_start"].iloc[1]
    prev = span[span.get_loc(first) - 1]
    if study.oos_positions[prev] != 0:
        assert study.oos_returns[first] != 0


@pytest.mark.parametrize("metric", ["total_return", "calmar", "hit_rate"])
def test_every_selection_metric_of_the_registry_runs(metric):
    "Selection metrics come from atf.metrics' registry; total_return used to fail on a periods_per_year argument."
    from atf.data import load_dataset
    from atf.strategies import sma_grid_positions, sma_pairs
    from atf.validation import SELECTION_METRICS
    close = load_dataset("sp500_index")["close"].loc["2000":"2008"]
    pairs = sma_pairs([10, 20], [100])
    study = walk_forward_rule(close, sma_grid_positions(close, pairs), pairs,
                              WalkForward(train="730D", validation="365D", test="365D"), metric=metric)
    assert metric in SELECTION_METRICS and study.folds[f"selection_{metric}"].notna().all()
