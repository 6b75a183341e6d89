"""A researcher's own data (issue 11, section 1): a long-format CSV written here, named in a datasets.yaml, through
`atf experiment` -> `atf export` (from another folder: no registry) -> `atf serve`; rule studies on a plain file;
`atf datasets --check`; a Parquet file read with only the columns atf uses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from atf.config import ConfigError, load_bars
from atf.data import file_sha256, load_dataset, read_bars
from atf.experiments import load_experiment
from test_serve import KEY, server

ATF = [str(Path(sys.executable).with_name("atf"))]      # the console script of this environment


def atf(*args, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "ATF_DATASETS"}
    return subprocess.run([*ATF, *args], cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def new_york_long(path: Path) -> pd.DataFrame:
    "IBM and MSFT daily bars as one long CSV stamped 16:00 New York time, with a column atf must not read."
    rows = []
    for t in ("IBM", "MSFT"):
        df = load_dataset("us_stocks", t).loc["2005":"2010"]
        ny = (df.index + pd.Timedelta("16h")).strftime("%Y-%m-%d %H:%M")      # the close, in local time
        rows.append(pd.DataFrame({"Timestamp": ny, "Ticker": t, "Open": df["open"], "High": df["high"], "Low": df["low"],
                                  "Close": df["close"], "Volume": df["volume"], "Comment": "vendor note"}))
    pd.concat(rows).to_csv(path, index=False)
    return pd.concat(rows)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("myproject")
    (root / "data").mkdir()
    new_york_long(root / "data" / "daily.csv")
    (root / "datasets.yaml").write_text("my_stocks:\n  path: data/daily.csv\n  asset_col: Ticker\n  time_col: Timestamp\n"
                                        "  tz: America/New_York\n  description: my vendor's daily bars\n")
    (root / "exp.yaml").write_text(
        "name: mine\ndata: {dataset: my_stocks, assets: [IBM], start: '2006-01-01'}\n"
        "model: {name: mlp, window: 5, params: {hidden: 8}}\ntrain: {max_epochs: 2, batch_size: 128}\n"
        "search_space: {lr: [0.003]}\ntuning: {n_trials: 1}\nwalk_forward: {train: 500, validation: 150, test: 250}\n"
        "output_dir: runs\nmemory_bank: null\ntearsheet: false\n")
    return root


def test_the_registered_name_lists_and_reads_the_columns_it_needs(project):
    out = atf("datasets", cwd=project / "data")                               # found from a subfolder, upwards
    assert out.returncode == 0 and "my_stocks" in out.stdout and "IBM, MSFT" in out.stdout, out.stderr
    raw = read_bars(project / "data" / "daily.csv", "IBM", time_col="Timestamp", asset_col="Ticker")
    assert "Comment" not in raw.columns and set(raw.columns) == {"Timestamp", "Open", "High", "Low", "Close", "Volume"}


def test_experiment_export_serve_on_own_csv(project, tmp_path):
    run = atf("experiment", "exp.yaml", "--run-id", "r1", "--quiet", cwd=project)
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = project / "runs" / "r1"
    rec = json.loads((run_dir / "run.json").read_text())["data"]
    csv = project / "data" / "daily.csv"
    assert rec["dataset"] == "my_stocks" and rec["origin"] == "files" and rec["tz"] == "America/New_York"
    assert rec["files"]["IBM"] == {"path": str(csv.resolve()), "size": csv.stat().st_size, "sha256": file_sha256(csv)}
    oos = pd.read_csv(run_dir / "oos_IBM_native.csv", index_col=0, parse_dates=True)
    assert set(oos.index.hour) == {20, 21}                                      # 16:00 New York in UTC (EDT, EST)

    elsewhere = tmp_path / "elsewhere"; elsewhere.mkdir()                       # no datasets.yaml up from here
    assert atf("datasets", cwd=elsewhere).stdout.count("my_stocks") == 0
    exp = atf("export", str(run_dir), cwd=elsewhere)
    assert exp.returncode == 0, exp.stderr[-3000:]
    model = run_dir / "models" / "IBM_native"
    assert json.loads((model / "manifest.json").read_text())["data_sha256"] == file_sha256(csv)

    m = json.loads((model / "manifest.json").read_text())
    df = load_dataset("us_stocks", "IBM").loc["2011-01-03":].iloc[:m["min_bars"] + 5]          # after the run's data
    bars = [{"time": str(t + pd.Timedelta("21h")), **{k: float(r[k]) for k in ("open", "high", "low", "close", "volume")}}
            for t, r in df.iterrows()]
    with server(model, "--api-key", KEY) as (url, _):
        r = httpx.post(url + "/predict", json={"bars": bars}, headers={"X-API-Key": KEY})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "primary" and {p["position"] for p in r.json()["predictions"]} <= {0.0, 1.0}


def test_export_refuses_a_changed_file(project):
    run_dir = project / "runs" / "r1"
    if not (run_dir / "run.json").exists(): pytest.skip("needs the run of the test before")
    csv = project / "data" / "daily.csv"
    saved = csv.read_bytes()
    try:
        csv.write_bytes(saved.replace(b"vendor note", b"vendor edit"))
        out = atf("export", str(run_dir), cwd=project)
        assert out.returncode != 0 and "differs from the one the run used" in out.stderr, out.stderr[-2000:]
    finally: csv.write_bytes(saved)


def test_export_of_a_run_on_a_plain_file(tmp_path):
    "A config that names a plain file (no dataset name): the run exports from anywhere and refuses the file once it changes."
    load_dataset("us_stocks", "IBM").loc["2005":"2010"].rename_axis("time").reset_index().to_csv(tmp_path / "mine.csv", index=False)
    (tmp_path / "own.yaml").write_text(
        "name: own\ndata: {dataset: mine.csv, start: '2006-01-01'}\n"
        "model: {name: mlp, window: 5, params: {hidden: 8}}\ntrain: {max_epochs: 2, batch_size: 128}\n"
        "search_space: {lr: [0.003]}\ntuning: {n_trials: 1}\nwalk_forward: {train: 500, validation: 150, test: 250}\n"
        "output_dir: runs\nmemory_bank: null\ntearsheet: false\n")
    run = atf("experiment", "own.yaml", "--run-id", "own1", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir, csv = tmp_path / "runs" / "own1", tmp_path / "mine.csv"
    assert json.loads((run_dir / "run.json").read_text())["data"]["dataset"] == str(csv.resolve())
    elsewhere = tmp_path / "elsewhere"; elsewhere.mkdir()
    exp = atf("export", str(run_dir), cwd=elsewhere)
    assert exp.returncode == 0, exp.stderr[-3000:]
    m = json.loads((run_dir / "models" / "mine_native" / "manifest.json").read_text())
    assert m["data_sha256"] == file_sha256(csv) and m["asset"] == "mine"
    assert max(m["parity"][k] for k in ("pickle", "torchscript", "onnx")) <= m["parity"]["tolerance"]

    csv.write_text(csv.read_text().replace(",", ", ", 1))                      # the same bars, another file
    out = atf("export", str(run_dir), cwd=elsewhere)
    assert out.returncode != 0 and "differs from the one the run used" in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_rule_study_on_a_plain_file_and_config_relative_paths(tmp_path):
    (tmp_path / "prices").mkdir()
    ko = load_dataset("sp500_stocks", "KO").loc["2010":"2016"]
    ko.rename_axis("Date").to_parquet(tmp_path / "prices" / "KO.parquet")
    (tmp_path / "study.yaml").write_text(
        "name: ko\ndata: {dataset: prices/KO.parquet}\nstrategy: {fast: [10, 20], slow: [50, 100]}\n"
        "walk_forward: {train: 730D, validation: 365D, test: 365D}\noutput_dir: out\n")
    out = atf("walk-forward", "study.yaml", "--run-id", "s1", "--quiet", "--no-tearsheet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((tmp_path / "out" / "s1" / "run.json").read_text())
    assert meta["assets"] == ["KO"] and meta["data"]["files"]["KO"]["sha256"] == file_sha256(tmp_path / "prices" / "KO.parquet")


@pytest.mark.parametrize("data, needle", [
    ({"dataset": "my.csv"}, "data.dataset: my.csv: no such file or directory"),
    ({"dataset": "us_stock"}, "did you mean 'us_stocks'?"),
    ({"dataset": "us_stocks", "assets": ["APPL"]}, "did you mean {'APPL': 'AAPL'}"),
    ({"dataset": "us_stocks", "asset_col": "ticker"}, "['asset_col'] apply to files"),
    ({"dataset": "us_stocks", "repairs": {"sorted": True}}, "data.repairs.sorted: not a repair (did you mean sort?)"),
])
def test_bad_data_sections_are_one_line(data, needle, tmp_path):
    with pytest.raises(ConfigError) as e: load_experiment({"data": data, "output_dir": str(tmp_path)})
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_datasets_check(tmp_path):
    good = load_dataset("us_stocks", "IBM").iloc[:50]
    good.to_csv(tmp_path / "IBM.csv")
    out = atf("datasets", "--check", "IBM.csv", cwd=tmp_path)
    assert out.returncode == 0 and "IBM: 50 bars" in out.stdout and "every 1D" in out.stdout and "ok: loads as it is" in out.stdout, out
    good.iloc[[0, 1, 1, 3, 2, *range(4, 50)]].to_csv(tmp_path / "BAD.csv")   # out of order, one exact duplicate
    out = atf("datasets", "--check", "BAD.csv", cwd=tmp_path)
    assert out.returncode == 1 and "not sorted" in out.stdout and "'sort': True" in out.stdout and "'duplicates': 'drop_exact'" in out.stdout, out
    out = atf("datasets", "--check", "nothing.csv", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no such file" in out.stderr, out


def test_a_workflow_notebook_takes_the_registered_name(project):
    "papermill runs the walk-forward workflow on `my_stocks` from the project folder: datasets.yaml is found there."
    nb = Path(__file__).resolve().parents[1] / "nbs" / "workflows" / "walk_forward.ipynb"
    papermill = str(Path(sys.executable).with_name("papermill"))
    res = subprocess.run([papermill, "--log-level", "ERROR", str(nb), str(project / "wf.ipynb"), "-p", "dataset", "my_stocks",
                          "-p", "asset", "MSFT", "-p", "n_trials", "1", "-p", "max_epochs", "1", "-p", "output_dir",
                          str(project / "runs"), "-p", "run_id", "wf1"], cwd=project, capture_output=True, text=True,
                         timeout=600, env={k: v for k, v in os.environ.items() if k != "ATF_DATASETS"})
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((project / "runs" / "wf1" / "run.json").read_text())["data"]
    assert rec["dataset"] == "my_stocks" and list(rec["files"]) == ["MSFT"]


def test_an_unadjusted_split_is_refused_until_prices_are_adjusted(tmp_path):
    "A Yahoo-style file whose close halves at a 2:1 split while adj_close runs on: named by --check and on load, never traded."
    df = load_dataset("us_stocks", "IBM").loc["2005":"2012"].copy()
    df["adj_close"] = df["close"]
    split = df.index >= "2010-06-01"
    for c in ("open", "high", "low", "close"): df.loc[split, c] /= 2
    df.rename_axis("Date").to_csv(tmp_path / "SPLIT.csv")
    out = atf("datasets", "--check", "SPLIT.csv", cwd=tmp_path)
    assert out.returncode == 1 and "close and adj_close part by more than 10% in one bar at 1 row(s): 2010-06-01" in out.stdout, out.stdout
    assert "'adjust': True" in out.stdout and "adjusted prices by adj_close / close" in out.stdout, out.stdout
    plain = load_experiment({"data": {"dataset": str(tmp_path / "SPLIT.csv")}})
    with pytest.raises(ValueError, match="a split the close does not include"): load_bars(plain.data, "SPLIT")
    cfg = load_experiment({"data": {"dataset": str(tmp_path / "SPLIT.csv"), "repairs": {"adjust": True}}})
    bars = load_bars(cfg.data, "SPLIT")
    assert bars["close"].pct_change().abs().max() < 0.2 and np.allclose(bars["close"], df["adj_close"])


def test_check_names_the_asset_column_of_a_long_file_instead_of_merging_assets(tmp_path):
    new_york_long(tmp_path / "long.csv")
    out = atf("datasets", "--check", "long.csv", "--time-col", "Timestamp", cwd=tmp_path)
    assert out.returncode == 1 and "one file of several assets? name its asset column" in out.stdout, out.stdout
    assert "'Ticker'" in out.stdout and "keep_last" not in out.stdout, out.stdout


def test_export_refuses_a_rule_study_run(tmp_path):
    (tmp_path / "study.yaml").write_text("name: ko\ndata: {dataset: sp500_stocks, assets: [KO], start: '2010-01-01', end: '2015-12-31'}\n"
                                         "strategy: {fast: [10], slow: [50]}\nwalk_forward: {train: 730D, validation: 365D, test: 365D}\n"
                                         "output_dir: out\n")
    assert atf("walk-forward", "study.yaml", "--run-id", "s", "-q", "--no-tearsheet", cwd=tmp_path).returncode == 0
    out = atf("export", "out/s", cwd=tmp_path)
    assert out.returncode == 2 and "is a rule study run: only experiment runs hold models to export" in out.stderr, out.stderr
