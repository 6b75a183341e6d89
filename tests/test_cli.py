"""The atf command, run as a real subprocess."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ATF = [str(Path(sys.executable).parent / "atf")]          # the installed console script


def run(*args, cwd=ROOT, check=True):
    return subprocess.run([*ATF, *args], cwd=cwd, capture_output=True, text=True, check=check, timeout=600)


@pytest.mark.parametrize("cmd", [[], ["datasets"], ["walk-forward"], ["demo"], ["experiment"], ["dashboard"], ["export"], ["serve"]])
def test_help_on_every_command(cmd):
    out = run(*cmd, "--help").stdout
    assert "usage: atf" in out


def test_walk_forward_from_config_writes_report(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\ndata: {dataset: us_stocks, assets: [IBM]}\n"
                   "strategy: {fast: [10, 20], slow: [50, 100]}\n"
                   "walk_forward: {train: 730D, validation: 365D, test: 365D}\n"
                   f"output_dir: {tmp_path}\n")
    res = run("walk-forward", str(cfg), "--run-id", "r1", "-q")
    out = tmp_path / "r1"
    assert f"report: {(out / 'report.html').resolve()}" in res.stdout
    html = (out / "report_IBM.html").read_text()
    assert "plotly" in html and "Walk-forward folds" in html
    m = pd.read_csv(out / "metrics.csv", index_col=0, header=[0, 1])
    assert m.loc["n_bars", ("IBM", "strategy")] == m.loc["n_bars", ("IBM", "buy_and_hold")] > 2000
    meta = json.loads((out / "run.json").read_text())
    assert meta["run_id"] == "r1" and len(meta["config_hash"]) == 12


def test_bad_config_fails_fast_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: t\ncosts: {fee_bsp: 3}\n")
    res = run("walk-forward", str(cfg), check=False)
    assert res.returncode == 2 and "costs.fee_bsp" in res.stderr


def test_datasets_lists_the_registry_with_spans_and_descriptions():
    out = run("datasets").stdout
    assert "sp500_stocks" in out and "btc_15m" in out and "XOM" in out                   # every asset of every dataset
    assert "1990-01-02..2022-12-28" in out and "S&P 500 index level" in out             # span and description


def test_version():
    import atf
    assert run("--version").stdout.strip() == f"atf {atf.__version__}"
