import logging
import warnings

import pandas as pd
import pytest

from atf.data import load_dataset

logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)   # quantstats' findfont noise
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="session")
def spx_returns() -> pd.Series:
    "Real daily S&P 500 index returns, 1990-2022."
    return load_dataset("sp500_index")["close"].pct_change().dropna()


@pytest.fixture(scope="session")
def stock_returns() -> dict[str, pd.Series]:
    "Real daily adjusted returns of several stocks (volatile and calm ones)."
    return {a: load_dataset("sp500_stocks", a)["close"].pct_change().dropna() for a in ("AAPL", "AMD", "KO", "XOM")}
