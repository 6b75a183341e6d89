"""Loading your own large file: atf vs a plain pandas read + resample, on the same Parquet file of 1-minute bars.

The file holds N one-minute OHLCV bars (default 5,000,000, about 9.5 years) and four columns atf does not use
(bid, ask, trades, vwap), as a vendor's export would. Both sides end with the same hourly bars:

- pandas: `pd.read_parquet` (every column; then only the OHLCV columns), `set_index`, `resample("1h").agg(...)`:
  no checks at all;
- atf: `files_dataset` + `load_dataset` (reads only the columns atf uses, standardises, validates every bar: finite,
  positive prices, high >= low, open/close inside the range, sorted, no duplicates) + `resample_ohlcv` (which
  validates its input again and drops a trailing partial bar).

Each side runs `--repeat` times in turn and the fastest round counts. Prints both times, the ratio (goal: atf no
slower than pandas, validation included) and checks that the hourly bars are equal.

    python benchmarks/bench_data.py [--n 5000000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from atf.data import files_dataset, load_dataset, resample_ohlcv

AGG = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}


def write_minutes(path: Path, n: int, seed: int = 0) -> None:
    "N valid one-minute bars from a random walk, plus four columns atf does not read."
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 3e-4, n)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 2e-4, n)) * close
    df = pd.DataFrame({"time": pd.date_range("2015-01-01", periods=n, freq="1min"), "open": open_,
                       "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread, "close": close,
                       "volume": rng.integers(1, 1000, n).astype(float), "bid": close - 0.01, "ask": close + 0.01,
                       "trades": rng.integers(1, 50, n), "vwap": (open_ + close) / 2})
    df.to_parquet(path, index=False)


def plain_pandas(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    df = pd.read_parquet(path, columns=columns).set_index("time")
    out = df.resample("1h", closed="left", label="left").agg(AGG)
    return out[df["close"].resample("1h", closed="left", label="left").count() > 0]


def with_atf(path: Path) -> pd.DataFrame:
    return resample_ohlcv(load_dataset(files_dataset(path), repair=False), "1h", drop_partial=False)


def best(fn, repeat: int) -> tuple[float, pd.DataFrame]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5_000_000, help="one-minute bars in the file (default 5,000,000)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per side; the fastest counts (default 3)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "minutes.parquet"
        t0 = time.perf_counter(); write_minutes(path, args.n)
        print(f"{args.n:,} one-minute bars, {path.stat().st_size / 2**20:.0f} MiB Parquet (written in {time.perf_counter() - t0:.1f} s)")
        rounds = {"pandas": [], "pandas_cols": [], "atf": []}
        outs = {}
        for _ in range(args.repeat):                        # alternate, so that machine drift hits both
            for name, fn in (("pandas", plain_pandas), ("pandas_cols", lambda p: plain_pandas(p, ["time", *AGG])), ("atf", with_atf)):
                t, outs[name] = best(lambda: fn(path), 1); rounds[name].append(t)
    tp, tc, ta = min(rounds["pandas"]), min(rounds["pandas_cols"]), min(rounds["atf"])
    print(f"plain pandas read + resample to 1h (no checks):           {tp:6.2f} s")
    print(f"pandas, only the OHLCV columns read (no checks):          {tc:6.2f} s")
    print(f"atf load (needed columns, validated) + resample to 1h:    {ta:6.2f} s")
    print(f"ratio pandas / atf: {tp / ta:.2f}x; pandas with the same columns / atf: {tc / ta:.2f}x "
          "(goal >= 1.0: atf no slower, validation included)")
    a, p = outs["atf"], outs["pandas"].rename_axis("time")
    pd.testing.assert_frame_equal(a, p[a.columns], check_freq=False)
    print(f"hourly bars equal: {len(a):,} rows")


if __name__ == "__main__":
    main()
