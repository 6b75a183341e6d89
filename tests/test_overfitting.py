"""atf.overfitting: the papers' numerical examples, skfolio as an oracle for PSR/DSR, and CSCV's PBO against a loop."""
import json
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.stats import rankdata

from atf import overfitting as of

sk = pytest.importorskip("skfolio.measures")


# ---------------------------------------------------------------- the papers' figures

def test_dsr_paper_example():
    # Bailey and Lopez de Prado (2014), "The Deflated Sharpe Ratio", JPM 40(5), section "A numerical example":
    # N = 100 trials, variance of their annualised Sharpes 1/2, best annualised SR 2.5, T = 1,250 daily bars
    # (5 years of 250), skewness -3, kurtosis 10 -> SR0 = 0.1132 per day, observed 0.1581, DSR = 0.9004.
    sr0 = of.expected_max_sharpe(100, 0.5 / 250)
    assert round(sr0, 4) == 0.1132
    assert round(2.5 / np.sqrt(250), 4) == 0.1581
    assert round(of.probabilistic_sharpe(2.5 / np.sqrt(250), 1250, skew=-3, kurtosis=10, benchmark=sr0), 4) == 0.9004


def test_min_backtest_length_paper_example():
    # Bailey, Borwein, Lopez de Prado, Zhu (2014), "Pseudo-mathematics and financial charlatanism", Notices of the AMS
    # 61(5): E[max] of 10 standard normals is about 1.57; with 5 years of data no more than 45 independent trials
    # should be tried before an annual Sharpe of 1 means nothing.
    assert round(of.expected_max_sharpe(10, 1.0), 2) == 1.57
    assert round(of.min_backtest_length(45, 1.0), 2) == 5.0
    assert np.isclose(of.min_backtest_length(45, 0.5), 4 * of.min_backtest_length(45, 1.0))
    assert of.min_backtest_length(1) == 0.0
    with pytest.raises(ValueError, match="target_sharpe"):
        of.min_backtest_length(45, 0.0)


def test_psr_known_cases():
    # normal returns (skew 0, kurtosis 3): z = SR sqrt(T-1) / sqrt(1 + SR^2 / 2)
    assert np.isclose(of.probabilistic_sharpe(0.1, 101), stats.norm.cdf(1.0 / np.sqrt(1.005)), rtol=1e-14)
    assert of.probabilistic_sharpe(0.05, 500, benchmark=0.05) == 0.5
    assert of.probabilistic_sharpe(0.1, 101, skew=-2, kurtosis=10) < of.probabilistic_sharpe(0.1, 101)
    with pytest.raises(ValueError, match="kurtosis"):
        of.probabilistic_sharpe(0.5, 100, skew=4, kurtosis=2)
    with pytest.raises(ValueError, match="n_obs"):
        of.probabilistic_sharpe(0.1, 1)


def test_psr_is_calibrated_on_noise():
    # zero true Sharpe: PSR(0) is about uniform, so it exceeds 0.95 on about 5% of series
    R = np.random.default_rng(11).standard_t(5, (3000, 250))
    sr, g3, g4 = R.mean(1) / R.std(1, ddof=1), stats.skew(R, axis=1), stats.kurtosis(R, axis=1, fisher=False)
    psr = [of.probabilistic_sharpe(*x, benchmark=0.0) for x in zip(sr, [250] * 3000, g3, g4)]
    assert abs(np.mean(np.array(psr) > 0.95) - 0.05) < 0.015


def test_expected_max_matches_simulation():
    # an approximation for large N: within 3% of the simulated mean maximum at N = 10, 1.5% at 100, 0.6% at 1,000
    rng = np.random.default_rng(0)
    for N, tol in [(10, 0.03), (100, 0.015), (1000, 0.006)]:
        best = rng.standard_normal((4_000, N)).max(1).mean()
        assert abs(of.expected_max_sharpe(N, 1.0) / best - 1) < tol
        assert np.isclose(of.expected_max_sharpe(N, 0.04), 0.2 * of.expected_max_sharpe(N, 1.0))   # sqrt(V) scaling
    assert of.expected_max_sharpe(1, 2.0) == 0.0 and of.expected_max_sharpe(30, 0.0) == 0.0
    for bad in [(0, 1.0), (2.5, 1.0), (np.nan, 1.0), (np.inf, 1.0), (5, -0.1), (5, np.nan)]:
        with pytest.raises(ValueError):
            of.expected_max_sharpe(*bad)


# ---------------------------------------------------------------- skfolio as an oracle (per-bar units throughout)

@pytest.mark.parametrize("seed", range(5))
def test_psr_dsr_match_skfolio(seed):
    rng = np.random.default_rng(seed)
    R = rng.standard_t(4, (750, 40)) * 0.01 + rng.normal(0.0003, 0.0003, 40)
    R[:, 5] = np.abs(R[:, 5]) * np.sign(rng.normal(-0.2, 1, 750))             # a skewed one
    trial_sr = np.array([of.sharpe_stats(R[:, j]).sharpe for j in range(40)])
    pick = R[:, trial_sr.argmax()]
    d = of.deflated_sharpe(pick, trial_sr)
    assert abs(d.dsr - sk.deflated_sharpe_ratio(pick, trial_sr)) < 1e-10
    assert abs(d.sharpe - sk.mean(pick) / sk.standard_deviation(pick)) < 1e-12
    assert abs(d.skew - sk.skew(pick)) < 1e-10 and abs(d.kurtosis - sk.kurtosis(pick)) < 1e-10
    for j in (0, 5):
        s = of.sharpe_stats(R[:, j])
        for bench in (0.0, 0.03):
            assert abs(of.probabilistic_sharpe(s.sharpe, s.n_obs, s.skew, s.kurtosis, bench)
                       - sk.probabilistic_sharpe_ratio(R[:, j], bench)) < 1e-10
    # N counts every trial run (skfolio takes N = len(trial_sharpes)): its PSR at its SR0 for that N
    sr0 = sk.expected_max_sharpe_ratio(120, float(np.std(trial_sr, ddof=1)))
    assert abs(of.deflated_sharpe(pick, trial_sr, n_trials=120).dsr - sk.probabilistic_sharpe_ratio(pick, sr0)) < 1e-10
    assert abs(of.expected_max_sharpe(120, trial_sr.var(ddof=1)) - sr0) < 1e-12


def test_sharpe_stats_conventions():
    r = pd.Series(np.random.default_rng(3).standard_t(3, 400) * 0.01, index=pd.bdate_range("2020-01-01", periods=400))
    s = of.sharpe_stats(r)
    assert np.isclose(s.sharpe, r.mean() / r.std(ddof=1), rtol=1e-13) and s.n_obs == 400
    assert np.isclose(s.skew, stats.skew(r, bias=True), rtol=1e-13)
    assert np.isclose(s.kurtosis, stats.kurtosis(r, fisher=False, bias=True), rtol=1e-13)   # raw, normal = 3
    assert of.sharpe_stats(np.zeros(30)) == of.SharpeStats(0.0, 0.0, 3.0, 30)
    assert of.sharpe_stats(np.full(30, 0.002)).sharpe == 0.0
    with pytest.raises(ValueError, match="2020-01-09") as e:                  # the label of the first NaN row
        of.sharpe_stats(r.where(r.index != r.index[6]).where(r.index != r.index[9]))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="row 4"):
        of.sharpe_stats(np.r_[np.ones(4), np.nan, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        of.sharpe_stats(np.ones((5, 2)))


def test_deflated_sharpe_inputs():
    rng = np.random.default_rng(5)
    r, trials = rng.normal(0.001, 0.01, 500), rng.normal(0, 0.04, 25)
    d = of.deflated_sharpe(r, trials)
    assert d.n_trials == 25 and np.isclose(d.sharpe_variance, trials.var(ddof=1))
    assert d.benchmark == of.expected_max_sharpe(25, trials.var(ddof=1))
    assert of.deflated_sharpe(r, trials, n_trials=200).dsr < d.dsr < of.probabilistic_sharpe(d.sharpe, 500, d.skew, d.kurtosis)
    assert of.deflated_sharpe(r, [0.05]).benchmark == 0.0                       # one trial: no selection
    out = d.to_dict()
    assert set(out) == {"dsr", "sharpe", "benchmark", "n_trials", "sharpe_variance", "skew", "kurtosis", "n_obs"}
    json.dumps(out, allow_nan=False)
    with pytest.raises(ValueError, match="n_trials=10 is fewer than the 25"):
        of.deflated_sharpe(r, trials, n_trials=10)
    with pytest.raises(ValueError, match=r"trial_sharpes\[2\]"):
        of.deflated_sharpe(r, np.r_[trials[:2], np.nan])
    with pytest.raises(ValueError, match=r"trial_sharpes\[17\]"):                 # a Series: its label (trial number)
        of.deflated_sharpe(r, pd.Series([0.1, np.inf], index=[12, 17]))
    with pytest.raises(ValueError, match="non-empty"):
        of.deflated_sharpe(r, [])


def test_dsr_tames_the_best_of_noise():
    # the best of 30 noise trials passes PSR(0) > 0.95 most of the time, DSR > 0.95 rarely
    rng = np.random.default_rng(2)
    psr_pass = dsr_pass = 0
    for _ in range(200):
        R = rng.normal(0, 0.01, (250, 30))
        sr = R.mean(0) / R.std(0, ddof=1)
        d = of.deflated_sharpe(R[:, sr.argmax()], sr)
        psr_pass += of.probabilistic_sharpe(d.sharpe, d.n_obs, d.skew, d.kurtosis) > 0.95
        dsr_pass += d.dsr > 0.95
    assert psr_pass > 100 and dsr_pass < 25


# ---------------------------------------------------------------- PBO / CSCV

def _sr(x):
    sd = x.std(0, ddof=1)
    return np.where(sd > 1e-12 * (1 + np.abs(x.mean(0))), x.mean(0) / np.where(sd > 0, sd, 1), 0.0)


def loop_pbo(R, S):
    "The paper's procedure, one split at a time."
    T, N = R.shape
    blocks = np.array_split(np.arange(T), S)
    logits, is_sr, oos_sr = [], [], []
    for chosen in combinations(range(S), S // 2):
        ins = np.concatenate([blocks[b] for b in chosen])
        oos = np.concatenate([blocks[b] for b in range(S) if b not in chosen])
        a, b = _sr(R[ins]), _sr(R[oos])
        k = int(np.argmax(a))
        omega = rankdata(b)[k] / (N + 1)
        logits.append(np.log(omega / (1 - omega)))
        is_sr.append(a[k]); oos_sr.append(b[k])
    return np.array(logits), np.array(is_sr), np.array(oos_sr)


@pytest.mark.parametrize("T,N,S,seed", [(200, 8, 8, 0), (200, 8, 8, 1), (203, 9, 6, 2), (157, 5, 4, 3), (60, 3, 2, 4)])
def test_pbo_equals_loop(T, N, S, seed):
    R = np.random.default_rng(seed).standard_t(4, (T, N)) * 0.01
    res = of.pbo(R, S)
    logits, is_sr, oos_sr = loop_pbo(R, S)
    assert np.array_equal(res.logits, logits)
    assert res.pbo == np.mean(logits < 0) + np.mean(logits == 0) / 2 and res.n_splits == len(logits) and res.n_blocks == S
    assert np.allclose(res.is_sharpe, is_sr, rtol=1e-10) and np.allclose(res.oos_sharpe, oos_sr, rtol=1e-10)
    fit = stats.linregress(is_sr, oos_sr)
    assert np.isclose(res.slope, fit.slope, rtol=1e-8) and np.isclose(res.intercept, fit.intercept, rtol=1e-8, atol=1e-12)
    assert res.prob_loss == np.mean(oos_sr < 0)


def test_pbo_ties_and_flat_trials():
    # a duplicated trial ties (average OOS rank); flat trials (never in the market, or a constant return) have
    # Sharpe 0 in every half and rank among the rest
    rng = np.random.default_rng(9)
    R = rng.normal(0, 0.01, (240, 9))
    R[:, 4] = R[:, 1]; R[:, 5] = 0.0; R[:, 6] = 0.0; R[:, 7] = 1e-4
    res = of.pbo(R, 8)
    assert np.array_equal(res.logits, loop_pbo(R, 8)[0])
    assert np.any(res.logits == 0.0)                         # N odd: exactly the median happens, and counts as overfit
    assert res.pbo == np.mean(res.logits < 0) + np.mean(res.logits == 0) / 2
    scaled = R.copy(); scaled[:, 4] = 0.7 * R[:, 1]          # the same trial at 0.7x the size: equal Sharpes up to rounding
    assert np.array_equal(of.pbo(scaled, 8).logits, res.logits)


def test_pbo_dataframe_and_chunks(monkeypatch):
    R = np.random.default_rng(4).normal(0, 0.01, (300, 12))
    df = pd.DataFrame(R, index=pd.bdate_range("2021-01-01", periods=300), columns=[f"t{i}" for i in range(12)])
    full = of.pbo(df, 10)
    monkeypatch.setattr(of, "CHUNK", 25)                     # two splits per chunk
    chunked = of.pbo(R, 10)
    assert np.array_equal(full.logits, chunked.logits) and np.allclose(full.oos_sharpe, chunked.oos_sharpe, rtol=1e-12)


@pytest.mark.parametrize("N", [8, 9])
def test_pbo_about_half_on_noise(N):
    # blind selection: the OOS rank of the IS winner is uniform on 1..N, so E[PBO] = P(rank < (N+1)/2) + P(median)/2:
    # 1/2 for even and odd N (the median rank, logit 0, counts half)
    expected = 0.5
    v = [of.pbo(np.random.default_rng(1000 + s).normal(0, 0.01, (200, N)), 8).pbo for s in range(300)]
    assert abs(np.mean(v) - expected) < 0.04


def test_pbo_near_zero_with_an_edge():
    for seed in range(5):
        R = np.random.default_rng(seed).normal(0, 1, (1000, 10))
        R[:, 3] += 0.2                                       # 0.2 standard deviations a bar
        res = of.pbo(R, 10)
        assert res.pbo < 0.05 and res.prob_loss < 0.05 and np.mean(res.oos_sharpe) > 0.1


def test_pbo_one_for_zero_sum_trials():
    # each trial sums to zero over the sample: what wins in sample loses out of sample
    for seed in range(3):
        R = np.random.default_rng(seed).normal(0, 1, (1000, 10))
        res = of.pbo(R - R.mean(0), 10)
        assert res.pbo == 1.0 and res.prob_loss == 1.0 and res.slope < 0


def test_pbo_result_to_dict():
    res = of.pbo(np.random.default_rng(0).normal(0, 1, (100, 4)), 4)
    out = res.to_dict()
    assert set(out) == {"pbo", "n_splits", "n_blocks", "slope", "intercept", "prob_loss"}
    assert all(isinstance(v, (int, float)) for v in out.values())
    json.dumps(out, allow_nan=False)
    flat = of.pbo(np.zeros((100, 4)), 4)                     # every trial flat: no regression, said as None
    assert np.isnan(flat.slope) and flat.to_dict()["slope"] is None and flat.pbo == 0.5 and flat.prob_loss == 0.0
    assert (flat.logits == 0).all()                          # every choice at the median: selection cannot be judged


@pytest.mark.parametrize("make,n_blocks,match", [
    (lambda R: R, 7, "n_blocks=7"),
    (lambda R: R, 0, "n_blocks=0"),
    (lambda R: R[:10], 16, "10 bars are too few for n_blocks=16"),
    (lambda R: R[:, :1], 4, "1 trial column"),
    (lambda R: R[:, 0], 4, "bars x trials matrix"),
    (lambda R: np.where((np.arange(50)[:, None] == 17) & (np.arange(3) == 2), np.nan, R), 4, "row 17, column 2"),
    (lambda R: pd.DataFrame(R, index=pd.bdate_range("2022-01-03", periods=50), columns=["a", "b", "c"]).replace(
        R[20, 1], np.inf), 4, "row 2022-01-31 00:00:00, column b"),
])
def test_pbo_errors(make, n_blocks, match):
    R = np.random.default_rng(0).normal(0, 1, (50, 3))
    with pytest.raises(ValueError, match=match) as e:
        of.pbo(make(R), n_blocks)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- verdict

def test_verdict():
    assert of.LUCK_THRESHOLDS == {"dsr": 0.95, "pbo": 0.5}
    assert of.verdict(0.97, 0.12) == "not explained by luck at these thresholds: DSR 0.97 >= 0.95 and PBO 0.12 <= 0.5"
    v = of.verdict(0.62, 0.71)
    assert v.startswith("likely luck: DSR 0.62 < 0.95") and "PBO 0.71 > 0.5" in v and "although" not in v
    assert "although PBO 0.12 <= 0.5" in of.verdict(0.62, 0.12)
    assert of.verdict(0.9496, None).startswith("likely luck: DSR 0.9496 < 0.95")
    assert of.verdict(0.9496, None).endswith("; PBO unavailable")
    assert of.verdict(0.95, 0.5).startswith("not explained")                  # the bars themselves pass
    assert "DSR 0.998 >= 0.95" in of.verdict(0.998, 0.9)                     # never a false "1.00"
    assert of.verdict(None, 0.3) == "not explained by luck at these thresholds: PBO 0.30 <= 0.5; DSR unavailable"
    assert of.verdict(None, None) == of.verdict(float("nan"), None) == "luck cannot be judged: DSR and PBO are unavailable"
    assert all("\n" not in of.verdict(d, p) for d in (None, 0.2, 0.99) for p in (None, 0.1, 0.9))
