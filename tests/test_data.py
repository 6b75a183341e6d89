"""Every registered real dataset loads offline, follows the convention, and bad files fail with the rows named."""
import numpy as np
import pandas as pd
import pytest

from atf.data import (DATASETS, DataValidationError, list_datasets, load_dataset, read_csv, resample_ohlcv,
                      validate_ohlcv)
from atf.metrics import infer_periods_per_year

EXPECTED_PPY = {"1D": (252, 365), "1h": (5000, 7000), "15min": (30000, 36000)}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_asset_of_every_dataset_loads_and_validates(name):
    for asset in DATASETS[name].assets:
        df = load_dataset(name, asset)
        validate_ohlcv(df, f"{name}/{asset}")
        assert df.index.is_monotonic_increasing and df.index.is_unique and df.index.tz is None
        assert len(df) > 150 and df.attrs["asset"] == asset
        lo, hi = EXPECTED_PPY[DATASETS[name].frequency]
        assert lo <= infer_periods_per_year(df.index) <= hi


def test_registry_describes_sources_and_licences():
    t = list_datasets()
    assert {"sp500_stocks", "us_stocks", "eurusd_1h", "btc_15m"} <= set(t.index)
    assert t["licence"].str.len().min() > 0 and t["package"].str.contains("==").all()
    assert len(DATASETS["sp500_stocks"].assets) == 20
    spx = load_dataset("sp500_stocks", "AAPL")
    assert spx.index[0] == pd.Timestamp("1990-01-02") and spx.index[-1] == pd.Timestamp("2022-12-28") and len(spx) == 8313


def test_btc_repairs_are_reported():
    btc = load_dataset("btc_15m")
    text = "\n".join(btc.attrs["repairs"])
    assert "sorted rows" in text and "off the 15min grid" in text and "conflicting duplicate" in text
    assert (btc.index.minute % 15 == 0).all() and (btc.index.second == 0).all()


def test_bad_csv_names_rows_and_rules(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("Date,Open,High,Low,Close,Volume\n"
                 "2024-01-02,10,11,9,10.5,100\n"
                 "2024-01-03,10,9,11,10.5,100\n"        # high < low
                 "2024-01-03,10,11,9,12,100\n"          # duplicate date, close above high
                 "2024-01-01,10,11,9,,100\n")           # unsorted, missing close
    with pytest.raises(DataValidationError) as e:
        read_csv(p)
    msg = str(e.value)
    for needle in ("high < low at 1 row(s): 2024-01-03", "duplicate timestamps at 2 row(s)",
                   "not sorted", "column 'close' has NaN", "close outside [low, high]"):
        assert needle in msg, needle


def test_resample_15min_to_1h_to_1d_is_consistent():
    btc = load_dataset("btc_15m").loc["2021-10-01":"2021-10-20"]
    h1 = resample_ohlcv(btc, "1h")
    d1 = resample_ohlcv(h1, "1D")
    d1_direct = resample_ohlcv(btc, "1D")
    pd.testing.assert_frame_equal(d1, d1_direct.loc[d1.index])
    some = h1.index[5]
    src = btc.loc[some: some + pd.Timedelta("59min")]
    assert h1.loc[some, "high"] == src["high"].max() and h1.loc[some, "close"] == src["close"].iloc[-1]
    assert np.isclose(h1["volume"].sum(), btc.loc[: h1.index[-1] + pd.Timedelta("59min"), "volume"].sum())


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registry_span_matches_the_files(name):
    d = DATASETS[name]
    first = min(load_dataset(name, a).index[0] for a in d.assets)
    last = max(load_dataset(name, a).index[-1] for a in d.assets)
    assert d.span == f"{first.date()}..{last.date()}"
