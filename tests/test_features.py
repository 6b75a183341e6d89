"""Features never use data after their bar; labels look exactly `horizon` bars ahead."""
import numpy as np
import pandas as pd
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from atf.features import FeatureSpec, direction_labels, forward_return, make_features

N = 120
rets = arrays(np.float64, N, elements=st.floats(-0.1, 0.1))


def frame(r: np.ndarray, vol_seed: int = 0) -> pd.DataFrame:
    c = 100 * np.cumprod(1 + r)
    rng = np.random.default_rng(vol_seed)
    return pd.DataFrame({"open": c, "high": c * 1.01, "low": c * 0.99, "close": c,
                         "volume": rng.integers(1_000, 5_000, len(c)).astype(float)},
                        index=pd.bdate_range("2020-01-01", periods=len(c)))


@settings(max_examples=60, deadline=None)
@given(r=rets, shock=rets, t=st.integers(0, N - 2))
def test_features_at_t_ignore_data_after_t(r, shock, t):
    a, b = frame(r), frame(np.r_[r[: t + 1], shock[t + 1:]])
    b.iloc[t + 1:, 4] = b.iloc[t + 1:, 4] * 3                      # change later volume too
    spec = FeatureSpec(return_horizons=[1, 3], volatility_windows=[5], rsi_window=5, atr_window=5, volume_window=5)
    fa, fb = make_features(a, spec), make_features(b, spec)
    pd.testing.assert_frame_equal(fa.iloc[: t + 1], fb.iloc[: t + 1])


@settings(max_examples=60, deadline=None)
@given(r=rets, h=st.integers(1, 10), band=st.sampled_from([0.0, 0.005, 0.02]))
def test_labels_look_exactly_h_ahead(r, h, band):
    c = frame(r)["close"]
    y = direction_labels(c, h, band)
    assert y.iloc[-h:].isna().all() and y.iloc[:-h].notna().all()
    fr = forward_return(c, h)
    np.testing.assert_allclose(fr.iloc[:-h], np.log(c.shift(-h) / c).iloc[:-h])
    # a label at t changes only if a close in (t, t+h] changes
    t = N // 2
    c2 = c.copy(); c2.iloc[t + h + 1:] *= 2
    assert y.iloc[: t + 1].equals(direction_labels(c2, h, band).iloc[: t + 1])
