"""What a run writes for people to read: out-of-sample calls, tuning across folds, tear-sheet tables, titled PNGs,
one plotly bundle per run folder, numbers formatted by kind, the rule study's PNGs and regimes, the index of runs."""
import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from plotly.offline import get_plotlyjs

from atf.metrics import call_summary, drawdown, max_drawdown, position_calls
from atf.reports import (LINE_POINTS, PLOTLY_JS, chart_title, html_table, line_points, monthly_returns, param_stability,
                         png_figure, rolling_beta, rolling_volatility, run_rows, worst_drawdowns, write_quantstats,
                         write_report, write_runs_index)
from atf.validation import stitch_account

TINY = {"name": "tiny", "data": {"dataset": "us_stocks", "assets": ["IBM"], "start": "2006-01-01", "end": "2010-12-31"},
        "model": {"name": "mlp", "window": 5, "params": {"hidden": 8}},
        "train": {"max_epochs": 2, "patience": 1, "batch_size": 128},
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}, "hidden": [8, 16]},
        "tuning": {"n_trials": 3, "metric": "sharpe"}, "walk_forward": {"train": 500, "validation": 150, "test": 250}}


def _walk(n: int, seed: int) -> pd.Series:
    r = np.random.default_rng(seed).normal(0.0003, 0.012, n)
    r[::17] = 0.0                                                        # some bars do not move
    return pd.Series(100 * np.cumprod(1 + r), pd.bdate_range("2001-01-01", periods=n), name="close")


# ---------------------------------------------------------------- out-of-sample calls
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_calls_score_the_bar_the_position_earns(seed, long_only):
    "Through atf's own stitched account (no costs): a long call is right exactly when the bar it holds pays."
    close = _walk(300, seed)
    rng = np.random.default_rng(seed + 1)
    levels = [0.0, 1.0] if long_only else [-1.0, 0.0, 1.0]
    cuts = [(20, 90), (90, 160), (175, 260)]                             # an untested gap between 160 and 175
    pieces = [pd.Series(rng.choice(levels, b - a), close.index[a:b]) for a, b in cuts]
    res = stitch_account(close, pieces, rebalance="every_bar")
    w, earned = res.positions.iloc[:, 0], res.returns.iloc[:, 0]
    calls = position_calls(w, close, long_only)
    prev = w.shift(1).reindex(calls.index)                               # the position held over each scored bar
    assert (calls["call"] == np.sign(prev).where(~((prev == 0) & long_only), -1)).all()
    assert (calls["truth"] == np.sign(close.pct_change()).reindex(calls.index)).all()
    held = prev != 0                                                     # the account moves with the call's sign x truth
    assert (np.sign(earned.reindex(calls.index))[held] == (np.sign(prev) * calls["truth"])[held]).all()
    assert close.index[160] not in calls.index and close.index[175] not in calls.index     # no call across the gap
    assert not (calls["truth"] == 0).any() and calls.index.isin(w.index).all()
    s = call_summary(w, close, long_only)
    long_bars = calls["call"] == 1
    assert s["calls_precision_up"] == pytest.approx((earned.reindex(calls.index)[long_bars] > 0).mean() if long_bars.any() else 0)
    n = sum(s[f"confusion_{t}_{c}"] for t in ("up", "down") for c in ("up", "down", "none"))
    assert n == s["calls_n"] == len(calls)


def test_flat_is_a_down_call_only_when_long_only():
    close = _walk(50, 0)
    w = pd.Series(0.0, close.index)
    assert call_summary(w, close, True)["calls_coverage"] == 1 and call_summary(w, close, False)["calls_coverage"] == 0
    bh = call_summary(pd.Series(1.0, close.index), close)
    up = (close.pct_change().iloc[1:] > 0).sum() / (close.pct_change().iloc[1:] != 0).sum()
    assert bh["calls_precision_up"] == pytest.approx(up) and bh["calls_recall_up"] == 1


def test_calls_refuse_positions_off_the_bars():
    close = _walk(20, 1)
    with pytest.raises(ValueError, match="not bars of close"):
        position_calls(pd.Series(1.0, pd.bdate_range("1990-01-01", periods=3)), close)


# ---------------------------------------------------------------- tear sheet numbers
def test_tear_sheet_tables_follow_atf_and_match_quantstats():
    qs = pytest.importorskip("quantstats")
    close = _walk(1500, 3)
    b = close.pct_change().fillna(0.0)
    r = b.where(close.rolling(30).mean().shift(1) < close.shift(1), 0.0)
    w = worst_drawdowns(r, n=50)
    dd = pd.Series(drawdown(r), r.index)
    assert w["depth"].iloc[0] == pytest.approx(max_drawdown(r)) and w["depth"].is_monotonic_increasing
    for _, e in w.iterrows():                                            # each episode: under water from start to recovery
        under = dd.loc[e["start"]:].iloc[:e["bars"]]
        assert (under < 0).all() and dd[e["trough"]] == e["depth"] == under.min()
        assert dd[e["recovery"]] == 0 if pd.notna(e["recovery"]) else under.index[-1] == dd.index[-1]
        assert dd.index.get_loc(e["start"]) == 0 or dd.iloc[dd.index.get_loc(e["start"]) - 1] == 0
    assert np.allclose(rolling_volatility(r, 63, 252).dropna(), qs.stats.rolling_volatility(r, 63, 252).dropna(), atol=1e-10)
    qb = qs.stats.rolling_greeks(r, b, 63)["beta"]
    ours = rolling_beta(r, b, 63)
    assert np.allclose(ours.dropna(), qb.reindex(ours.dropna().index), atol=1e-10)
    m = monthly_returns(r).drop(columns="year")
    qm = qs.stats.monthly_returns(r, eoy=False, compounded=True)
    ours, theirs = m.to_numpy(dtype=float), qm.to_numpy(dtype=float)[:, :12]
    seen = np.isfinite(ours)                                             # quantstats writes 0% for months without bars
    assert np.allclose(ours[seen], theirs[seen], atol=1e-12) and (theirs[~seen] == 0).all() and (~seen).any()


def test_quantstats_tear_sheet_opens_offline(tmp_path):
    pytest.importorskip("quantstats")
    close = _walk(600, 4)
    b = close.pct_change().fillna(0.0)
    import matplotlib
    style = lambda: {k: v for k, v in matplotlib.rcParams.items() if not k.startswith("backend")}
    before = style()
    p = write_quantstats(tmp_path / "t.html", b * 0.5, b, "SYN 1D · half", 252)
    assert style() == before                                             # its style does not leak into atf's PNGs
    text = p.read_text()
    assert "SYN 1D" in text and not re.search(r"<(script|link|img)[^>]+(src|href)=['\"]https?://", text)


# ---------------------------------------------------------------- pages: one bundle, small files, formatted numbers
def test_report_loads_one_bundle_and_stays_small(tmp_path):
    close = _walk(6000, 5)
    b = close.pct_change().fillna(0.0)
    series = {"model": b.where(close.rolling(50).mean().shift(1) < close.shift(1), 0.0), "logistic": b * 0.7}
    for k in ("a", "b"):
        write_report(tmp_path / f"report_{k}.html", "t", series["model"], b, name="model", others={"logistic": series["logistic"]},
                     periods_per_year=252)
    pages = sorted(tmp_path.glob("*.html"))
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".js"] == [PLOTLY_JS]
    assert (tmp_path / PLOTLY_JS).read_text() == get_plotlyjs()
    for p in pages:
        text = p.read_text()
        assert p.stat().st_size < 1_000_000, p.stat().st_size
        assert f"<script src='{PLOTLY_JS}'" in text and "plotly.js v" not in text           # loaded, not inlined
        assert text.count("Plotly.newPlot") >= 8 and '"name":"logistic"' in text                # figures' data inline
        for head in ("Monthly returns", "Yearly returns", "Worst drawdowns: model", "Rolling volatility", "Rolling beta"):
            assert head in text, head


def test_long_lines_keep_their_envelope():
    s = pd.Series(np.random.default_rng(0).normal(0, 0.01, 20_000), pd.date_range("1950-01-01", periods=20_000))
    dd = drawdown(s)
    x, y = line_points(s.index, dd)
    assert len(y) <= LINE_POINTS and y.min() == dd.min() and y.max() == dd.max() and pd.Index(x).is_monotonic_increasing


def test_numbers_are_formatted_by_kind():
    t = pd.DataFrame({"strategy": [2520.0, 0.123456, -0.4321, 1.23456, 0.5312, 17.0, 12.0]},
                     index=["n_bars", "total_return", "max_drawdown", "sharpe", "calls_precision_up", "max_drawdown_bars",
                            "confusion_up_up"])
    cells = re.findall(r"<td>([^<]*)</td>", html_table(t))
    assert cells == ["2,520", "12.35%", "-43.21%", "1.235", "0.531", "17", "12"]
    meta = pd.DataFrame({"config_hash": ["00ab12"], "test_return": [0.5], "trials": [4.0], "start": [pd.Timestamp("2020-01-02")]})
    assert re.findall(r"<td>([^<]*)</td>", html_table(meta)) == ["00ab12", "50.00%", "4", "2020-01-02"]


def test_png_titles_labels_legend_and_log_ticks():
    close = _walk(1500, 6)
    b = close.pct_change().fillna(0.0)
    series = {"lstm": b * 0.5, "logistic": b * 0.8, "buy and hold": b}
    title = chart_title("AAPL", "1D", "lstm", 20)
    assert title == "AAPL 1D · lstm · window 20"
    for chart in ("equity", "drawdown", "rolling_sharpe", "pnl_hist"):
        fig = png_figure(chart, series, title, 252)
        ax = fig.axes[0]
        assert ax.get_title().startswith(title) and ax.get_xlabel() and ax.get_ylabel()
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(series)
        if chart == "equity":
            fig.canvas.draw()
            labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
            assert labels and all(re.fullmatch(r"\d+(\.\d+)?", s) for s in labels), labels       # 1, 2, 5, not 10^0
        fig.clf()


# ---------------------------------------------------------------- the runs: experiment, rule study, index
@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from atf.experiments import load_experiment, run_experiment
    d = tmp_path_factory.mktemp("reports")
    return run_experiment(load_experiment({**TINY, "output_dir": str(d), "memory_bank": None}), run_id="tiny", progress=False)


def test_experiment_writes_calls_everywhere(experiment):
    from atf.experiments import load_experiment, prepare
    m = pd.read_csv(experiment / "metrics.csv", index_col=0, header=[0, 1])
    run = json.loads((experiment / "run.json").read_text())
    oos = pd.read_csv(experiment / "oos_IBM_native.csv", index_col=0, parse_dates=True)
    close = prepare(load_experiment(TINY), "IBM", "native")["close"]
    for col, pos in (("model", "position"), ("logistic", "logistic_position")):
        s = call_summary(oos[pos], close, long_only=True)              # recomputed from the CSV the run wrote
        assert np.allclose(m[("IBM_native", col)].reindex(s.index), s, equal_nan=True)
        assert run["oos_calls"]["IBM_native"][col]["calls_f1_up"] == pytest.approx(s["calls_f1_up"])
    html = (experiment / "report_IBM_native.html").read_text()
    assert "confusion counts" in html and "calls_precision_up" in html and run["kind"] == "experiment"


def test_experiment_reports_tuning_of_every_fold(experiment):
    folds = pd.read_csv(experiment / "folds.csv")
    html = (experiment / "report_IBM_native.html").read_text()
    assert len(folds) >= 2 and all(f'"name":"fold {k}"' in html for k in folds["fold"])
    assert "Parameter importance by fold" in html and "Best parameters by fold" in html
    stab = pd.read_csv(experiment / "param_stability.csv", index_col=0)
    assert set(stab.index) == {"lr", "hidden"} and (stab["folds"] == len(folds)).all()
    best = pd.DataFrame([json.loads(b) for b in folds["best_params"]])
    assert stab.loc["hidden", "mode_share"] == pytest.approx(best["hidden"].value_counts().iloc[0] / len(best))
    assert param_stability(best).loc["lr", "median"] == pytest.approx(best["lr"].median())


def test_experiment_pages_share_one_bundle_and_the_index_lists_the_run(experiment):
    assert (experiment / PLOTLY_JS).exists() and (experiment / "report_IBM_native.html").stat().st_size < 1_000_000
    assert (experiment / "tearsheet_IBM_native.html").exists()
    index = (experiment.parent / "index.html").read_text()
    assert "tiny/report_IBM_native.html" in index and "mlp" in index


def test_rule_study_writes_pngs_regimes_and_the_index(tmp_path):
    from atf.studies import load_config, run_rule_study
    cfg = load_config({"name": "tiny", "data": {"assets": ["KO", "XOM"], "start": "2010-01-01", "end": "2015-12-31"},
                       "strategy": {"fast": [10, 20], "slow": [50, 100]}, "output_dir": str(tmp_path),
                       "walk_forward": {"train": "730D", "validation": "365D", "test": "365D"}})
    run = run_rule_study(cfg, run_id="s1", progress=False)
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(
        f"{a}_{c}.png" for a in ("KO", "XOM") for c in ("equity", "drawdown", "rolling_sharpe", "pnl_hist"))
    reg = pd.read_csv(run / "regimes.csv", index_col=0)
    assert set(reg["asset"]) == {"KO", "XOM"} and reg["n_bars"].sum() <= pd.read_csv(run / "oos_KO.csv").shape[0] * 2
    m = pd.read_csv(run / "metrics.csv", index_col=0, header=[0, 1])
    assert 0 < m.loc["calls_precision_up", ("KO", "strategy")] < 1
    run_rule_study(cfg, run_id="s2", progress=False)                    # the index is rewritten after every run
    rows = run_rows(tmp_path)
    assert set(rows["run"]) == {"s1", "s2"} and set(rows["key"]) == {"KO", "XOM"} and rows["buy_and_hold_sharpe"].notna().all()


def test_index_survives_old_and_partial_runs(tmp_path):
    old = tmp_path / "demo-sma-walk-forward-20261128T193221Z-f7b4fc"; old.mkdir()       # a rule study before this change
    (old / "run.json").write_text(json.dumps({"run_id": old.name, "assets": ["AAPL"], "oos": {"AAPL": {"sharpe": 0.75}}}))
    (old / "config.yaml").write_text("name: demo-sma\nstrategy: {kind: sma_crossover}\n")
    (old / "report.html").write_text("x")
    (tmp_path / "half").mkdir(); (tmp_path / "half" / "config.yaml").write_text("name: [unclosed\n")   # broken YAML
    (tmp_path / "broken").mkdir(); (tmp_path / "broken" / "run.json").write_text("{not json")
    (tmp_path / "memory_bank").mkdir(); (tmp_path / "memory_bank" / "runs.jsonl").write_text("")
    page = write_runs_index(tmp_path).read_text()
    rows = run_rows(tmp_path).set_index("run")
    assert set(rows.index) == {old.name, "half", "broken"}
    assert rows.loc[old.name, "date"] == "2026-11-28 19:32:21" and rows.loc[old.name, "oos_sharpe"] == 0.75
    assert rows.loc[old.name, "model"] == "sma_crossover" and rows.loc["half", "status"].startswith("incomplete")
    assert f"{old.name}/report.html" in page
