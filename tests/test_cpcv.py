"""Combinatorial purged cross-validation (issue #13): C(N,k) splits and C(N-1,k-1) paths, no label shared between a
training/validation bar and a test bar, the embargo after each test group, and every split and path equal to
skfolio's CombinatorialPurgedCV (purged_size = purge, embargo_size = embargo, no validation groups)."""
import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings, strategies as st

from atf.config import ConfigError, WalkForwardConfig, build
from atf.validation import CombinatorialPurged, WalkForward, folds_table, walk_forward_rule


@st.composite
def splitters(draw, validation=True):
    N = draw(st.integers(2, 9))
    k = draw(st.integers(1, N - 1))
    v = draw(st.integers(0, N - k - 1)) if validation else 0
    h = draw(st.integers(0, 6))
    return CombinatorialPurged(N, k, v, label_horizon=h, purge=h + draw(st.integers(0, 3)), embargo=draw(st.integers(0, 6)))


def folds_or_skip(cv, n):
    try:
        return cv.split(n)
    except ValueError as e:
        assert "too few" in str(e)
        assume(False)


def group_of(cv, n):
    return np.concatenate([np.full(len(g), i) for i, g in enumerate(cv.groups(n))])


@settings(max_examples=300, deadline=None)
@given(cv=splitters(), n=st.integers(2, 400))
def test_no_training_or_validation_label_meets_a_test_bar(cv, n):
    "For every kept training/validation bar i and test bar j: not (i < j <= i + h) and not (j < i <= j + h)."
    h = cv.label_horizon
    for f in folds_or_skip(cv, n):
        for seen in (f.train, f.validation):
            i, j = seen[:, None], f.test[None, :]
            assert not ((i < j) & (j <= i + h)).any()          # the training label does not reach into the test
            assert not ((j < i) & (i <= j + h)).any()          # no test label reaches into the training bar
        i, j = f.train[:, None], f.validation[None, :]
        assert not ((i < j) & (j <= i + h)).any() and not ((j < i) & (i <= j + h)).any()


@settings(max_examples=300, deadline=None)
@given(cv=splitters(), n=st.integers(2, 400))
def test_segments_layout_and_embargo(cv, n):
    folds = folds_or_skip(cv, n)
    grp, kinds = group_of(cv, n), cv.layout().to_numpy()
    assert len(folds) == cv.n_splits == math.comb(cv.n_groups, cv.n_test_groups)
    assert [f.number for f in folds] == list(range(cv.n_splits))
    for f, tests, kind in zip(folds, itertools.combinations(range(cv.n_groups), cv.n_test_groups), kinds):
        assert np.array_equal(f.test, np.flatnonzero(np.isin(grp, tests)))       # the k test groups, whole
        assert not np.intersect1d(f.train, f.validation).size and not np.intersect1d(f.train, f.test).size
        assert not np.intersect1d(f.validation, f.test).size
        assert (kind[grp[f.validation]] == "validation").all() and (kind[grp[f.train]] == "train").all()
        rest = [g for g in range(cv.n_groups) if g not in tests]
        assert np.flatnonzero(kind == "validation").tolist() == rest[len(rest) - cv.validation_groups:]   # the last ones
        if len(f.validation): assert f.train.max() < f.validation.min()        # tuning sees only later bars
        val_groups = np.flatnonzero(kind[grp] == "validation")
        for seg, group_bars, guard in ((f.train, np.flatnonzero(kind[grp] == "train"), np.r_[f.test, val_groups]),
                                       (f.validation, val_groups, f.test)):
            d = seg[:, None] - guard[None, :]                                    # purge before, purge + embargo after
            assert not ((d < 0) & (-d <= cv.before)).any() and not ((d > 0) & (d <= cv.after)).any()
            d = np.setdiff1d(group_bars, seg)[:, None] - guard[None, :]          # and each removed bar is one of those
            assert (((d < 0) & (-d <= cv.before)) | ((d > 0) & (d <= cv.after))).any(axis=1).all()


@settings(max_examples=200, deadline=None)
@given(cv=splitters(), n=st.integers(2, 400))
def test_paths_cover_every_bar_once_in_time_order(cv, n):
    folds = folds_or_skip(cv, n)
    paths = cv.paths(n)
    assert len(paths) == cv.n_paths == math.comb(cv.n_groups - 1, cv.n_test_groups - 1)
    groups = cv.groups(n)
    for path in paths:
        assert np.array_equal(np.concatenate([bars for _, bars in path]), np.arange(n))
        for g, (s, bars) in enumerate(path):
            assert np.array_equal(bars, groups[g]) and g in cv.test_groups[s] and np.isin(bars, folds[s].test).all()
    pairs = [(s, g) for path in paths for g, (s, _) in enumerate(path)]
    assert len(set(pairs)) == len(pairs) == cv.n_splits * cv.n_test_groups       # each tested group in one path
    for g in range(cv.n_groups):                                                # group g's j-th path: j-th split testing g
        assert [path[g][0] for path in paths] == [s for s, t in enumerate(cv.test_groups) if g in t]


def test_groups_hold_the_remainder_in_the_last():
    assert [len(g) for g in CombinatorialPurged(6).groups(63)] == [10, 10, 10, 10, 10, 13]
    assert [len(g) for g in CombinatorialPurged(4).groups(pd.RangeIndex(8))] == [2, 2, 2, 2]
    s = pd.Series(0.0, index=pd.bdate_range("2020-01-01", periods=50))
    assert len(CombinatorialPurged(5, validation_groups=0).split(s)) == 10 and len(CombinatorialPurged(5).paths(s.to_frame())) == 4


def test_embargo_removes_exactly_the_bars_after_each_guarded_group():
    "Raising the embargo from 0 to e removes, per split, only the bars p+1 .. p+e after a test/validation group."
    n, p, e = 120, 2, 3
    base = CombinatorialPurged(6, 2, 1, label_horizon=p).split(n)
    emb = CombinatorialPurged(6, 2, 1, label_horizon=p, embargo=e).split(n)
    for b, f in zip(base, emb):
        assert np.array_equal(b.test, f.test)
        for seg, guard in (("train", np.r_[b.test, b.validation]), ("validation", b.test)):
            lost = np.setdiff1d(getattr(b, seg), getattr(f, seg))
            assert not np.setdiff1d(getattr(f, seg), getattr(b, seg)).size
            gone = [i for i in getattr(b, seg) if ((guard < i) & (i - guard > p) & (i - guard <= p + e)).any()]
            assert np.array_equal(lost, gone)
    assert any(len(b.train) > len(f.train) for b, f in zip(base, emb))


def test_a_hand_computed_split():
    "N = 6 groups of 10 (the last 13), test groups (1, 3), validation group 5, h = 2, embargo 1."
    cv = CombinatorialPurged(6, 2, 1, label_horizon=2, embargo=1)
    f = cv.split(63)[cv.test_groups.index((1, 3))]
    assert np.array_equal(f.train, np.r_[0:8, 23:28, 43:48]) and np.array_equal(f.validation, np.arange(50, 63))
    assert np.array_equal(f.test, np.r_[10:20, 30:40])
    t = folds_table([f], pd.RangeIndex(63))                                     # bounds of a non-contiguous test
    assert (t.loc[f.number, "test_start"], t.loc[f.number, "test_end"], t.loc[f.number, "test_bars"]) == (10, 39, 20)


def test_one_test_group_is_purged_k_fold_with_one_path():
    "k = 1 (skfolio refuses it): N folds, each group tested once; the one path is the whole series."
    cv = CombinatorialPurged(5, 1, 0, label_horizon=1, embargo=1)
    folds = cv.split(50)
    assert [f.test.tolist() for f in folds] == [list(range(10 * g, 10 * g + 10)) for g in range(5)]
    assert folds[2].train.tolist() == list(range(0, 19)) + list(range(32, 50))
    assert cv.n_paths == 1 and [s for s, _ in cv.paths(50)[0]] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kwargs, says", [
    (dict(n_groups=1), "CombinatorialPurged.n_groups must be >= 2, got 1"),
    (dict(n_groups=2.5), "CombinatorialPurged.n_groups must be a whole number >= 0, got 2.5"),
    (dict(n_test_groups=6), "CombinatorialPurged.n_test_groups must be 1..5 (below n_groups), got 6"),
    (dict(n_test_groups=0), "CombinatorialPurged.n_test_groups must be 1..5"),
    (dict(validation_groups=4), "CombinatorialPurged.validation_groups=4 leaves no training group"),
    (dict(validation_groups=-1), "CombinatorialPurged.validation_groups must be a whole number >= 0"),
    (dict(purge=1, label_horizon=3), "purge=1 is shorter than label_horizon=3"),
    (dict(embargo=-1), "CombinatorialPurged.embargo must be a whole number >= 0, got -1"),
    (dict(label_horizon=True), "CombinatorialPurged.label_horizon must be a whole number"),
    (dict(n_groups=30, n_test_groups=15), "CombinatorialPurged.n_test_groups: C(30, 15) = 155,117,520 splits"),
])
def test_bad_settings_are_one_line_naming_the_field(kwargs, says):
    with pytest.raises(ValueError) as e: CombinatorialPurged(**kwargs)
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("n, says", [
    (5, "5 bars are too few for n_groups=6"),
    (12, "12 bars are too few: split 1 (test groups (0, 2)) keeps no training bar after purge 2 and embargo 0"),
    (24, "split 13 (test groups (3, 5)) keeps no validation bar"),
])
def test_too_few_bars_say_so(n, says):
    with pytest.raises(ValueError, match=re.escape(says)): CombinatorialPurged(label_horizon=2).split(n)


def test_rule_study_refuses_cpcv():
    close = pd.Series(np.linspace(100, 120, 60))
    with pytest.raises(ValueError, match="needs a WalkForward splitter"):
        walk_forward_rule(close, np.ones((60, 1)), ["hold"], CombinatorialPurged(3, 1, 0))


# --- skfolio 1.12.2 as the oracle ----------------------------------------------------------------------------------

def skfolio_layout(N, k, p, e, n):
    "skfolio's train and (concatenated) test indices per split, and its path id of each split's test groups."
    sk = pytest.importorskip("skfolio.model_selection")
    cv = sk.CombinatorialPurgedCV(n_folds=N, n_test_folds=k, purged_size=p, embargo_size=e)
    splits = [(train, np.concatenate(tests)) for train, tests in cv.split(np.zeros((n, 1)))]
    return splits, cv.get_path_ids()


def our_path_ids(cv, n):
    "Our paths as skfolio's array: [split, j] = the path holding the split's j-th test group (ascending)."
    ids = np.full((cv.n_splits, cv.n_test_groups), -1)
    for p, path in enumerate(cv.paths(n)):
        for g, (s, _) in enumerate(path): ids[s, cv.test_groups[s].index(g)] = p
    return ids


def assert_same_as_skfolio(N, k, p, e, n):
    ours = CombinatorialPurged(N, k, 0, label_horizon=p, purge=p, embargo=e)
    theirs, path_ids = skfolio_layout(N, k, p, e, n)
    folds = ours.split(n)
    assert len(folds) == len(theirs)
    for f, (train, test) in zip(folds, theirs):
        np.testing.assert_array_equal(f.train, train, err_msg=f"split {f.number} train")
        np.testing.assert_array_equal(f.test, test, err_msg=f"split {f.number} test")
        assert not len(f.validation)
    np.testing.assert_array_equal(our_path_ids(ours, n), path_ids)


@pytest.mark.parametrize("N, k, p, e, n", [
    (6, 2, 0, 0, 60), (6, 2, 2, 1, 63), (5, 3, 1, 0, 101), (8, 3, 3, 2, 250), (4, 2, 1, 1, 22),
    (10, 4, 2, 3, 517), (3, 2, 0, 2, 31), (7, 5, 4, 0, 200), (6, 2, 5, 5, 1000),
])
def test_same_splits_and_paths_as_skfolio(N, k, p, e, n):
    assert_same_as_skfolio(N, k, p, e, n)


@settings(max_examples=150, deadline=None)
@given(N=st.integers(3, 9), k=st.integers(2, 8), p=st.integers(0, 5), e=st.integers(0, 5), n=st.integers(20, 500))
def test_same_as_skfolio_wherever_both_accept(N, k, p, e, n):
    assume(k < N and p + e < n // N - 1)                   # skfolio's own limits: k >= 2, N >= 3, and its size check
    try:
        CombinatorialPurged(N, k, 0, label_horizon=p, embargo=e).split(n)
    except ValueError as err:                              # a split left without training bars: ours refuses
        assert "keeps no training bar" in str(err)
        assume(False)
    assert_same_as_skfolio(N, k, p, e, n)


# --- config -------------------------------------------------------------------------------------------------------

def test_config_scheme_builds_the_splitter():
    cfg = build(WalkForwardConfig(), {"scheme": "cpcv", "n_groups": 8, "n_test_groups": 3, "validation_groups": 2,
                                      "purge": 4, "embargo": 1}, "walk_forward.")
    assert cfg.splitter(label_horizon=3) == CombinatorialPurged(8, 3, 2, label_horizon=3, purge=4, embargo=1)
    assert isinstance(WalkForwardConfig().splitter(2), WalkForward)


@pytest.mark.parametrize("raw, says", [
    ({"scheme": "cpvc"}, "walk_forward.scheme: expected 'walk_forward' or 'cpcv', got 'cpvc'"),
    ({"scheme": "cpcv", "n_groups": 1}, "walk_forward: n_groups must be >= 2"),
    ({"scheme": "cpcv", "validation_groups": 4}, "walk_forward: validation_groups=4 leaves no training group"),
    ({"n_groups": 4}, "walk_forward: n_groups is a key of scheme cpcv, which this config does not use"),
    ({"scheme": "cpcv", "n_groups": "6"}, "walk_forward.n_groups: expected int, got '6'"),
])
def test_config_errors_name_the_key(raw, says):
    with pytest.raises(ConfigError) as e: build(WalkForwardConfig(), raw, "walk_forward.")
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_experiment_config_refuses_an_unknown_scheme():
    from atf.experiments import load_experiment          # heavy (torch): imported only by this test
    with pytest.raises(ConfigError, match="walk_forward.scheme: expected 'walk_forward' or 'cpcv', got 'kfold'"):
        load_experiment({"walk_forward": {"scheme": "kfold"}})
    assert load_experiment({"walk_forward": {"scheme": "cpcv", "embargo": 60}}).walk_forward.scheme == "cpcv"
    with pytest.raises(ConfigError, match=r"walk_forward.embargo: 0 .* at least 50"):        # features would see test bars
        load_experiment({"walk_forward": {"scheme": "cpcv"}})


def test_rule_study_config_refuses_cpcv():
    "Rule studies walk forward only (atf.studies.load_config)."
    from atf.studies import load_config
    with pytest.raises(ConfigError, match=r"^walk_forward\.scheme"):
        load_config({"walk_forward": {"scheme": "cpcv"}})
