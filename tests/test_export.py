"""Exports: three formats agree with the eager model on held-out rows, the manifest is complete and tamper-evident."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from atf.data import file_sha256
from atf.export import PARITY_TOLERANCE, ExportError, export_run, reference_stats
from atf.manifest import Manifest


@pytest.mark.parametrize("kind", ["mlp", "lstm", "ppo"])
def test_every_format_matches_the_eager_model(exported, kind):
    d = exported[kind]["model"]
    m = json.loads((d / "manifest.json").read_text())
    pipeline = ["pipeline.atf.pkl", "pipeline.zip"] if kind == "ppo" else ["pipeline.pkl"]
    assert sorted(m["files"]) == ["model.onnx", "model.ts", *pipeline] and Manifest.read_and_verify(d).format == "atf-model/2"
    assert all(file_sha256(d / f) == h for f, h in m["files"].items())
    assert list(m["outputs"])[:2] == ["signal", "position"] and (m["state"] == ["position", "unrealised_log_pnl"]) == (kind == "ppo")
    assert m["parity"]["rows"] > 50 and all(m["parity"][f] <= PARITY_TOLERANCE for f in ("pickle", "torchscript", "onnx"))
    assert m["features"]["names"] == list(m["reference"]) and m["inputs"]["features"][1:] == [m["window"], len(m["features"]["names"])]
    assert m["training"]["end"] < m["held_out"]["start"]              # parity rows were never trained on
    assert {"torch", "onnxruntime", "numpy"} <= set(m["versions"]) and m["data_sha256"]
    assert m["bars_feature_max_rel_diff"] <= 1e-6 and m["min_bars"] > m["window"]


def test_onnx_graph_includes_scaling_and_reproduces_research_predictions(exported):
    "onnxruntime on raw feature windows = SupervisedTrainer.predict_proba and positions_from_proba on the held-out bars."
    import onnxruntime as ort
    import pandas as pd
    from atf.data import load_dataset
    from atf.features import FeatureSpec, make_features
    from atf.trainers.supervised import SupervisedTrainer, positions_from_proba
    d, run = exported["lstm"]["model"], exported["lstm"]["run"]
    m = json.loads((d / "manifest.json").read_text())
    df = load_dataset("us_stocks", "IBM").loc["2006-01-01":"2010-12-31"]
    F = make_features(df, FeatureSpec(**m["features"]["spec"]))
    test = np.flatnonzero(df.index >= pd.Timestamp(m["held_out"]["start"]))
    t = SupervisedTrainer.load(run / "model_IBM_native.pkl")
    want, bars = t.predict_proba(F, test)
    raw = F.to_numpy(np.float32)[bars[:, None] + np.arange(-m["window"] + 1, 1)]
    proba, position = ort.InferenceSession(str(d / "model.onnx")).run(["probability", "position"], {"features": raw})
    assert np.abs(proba - want).max() <= PARITY_TOLERANCE
    rule = m["card"]["position_rule"]
    assert np.array_equal(position[:, 0], positions_from_proba(want, t.classes_, rule["long_only"], rule["min_confidence"]))


def test_position_rules_are_inside_the_graph(tmp_path):
    "Short calls and a confidence floor: the graph's positions equal positions_from_proba on every held-out row."
    import onnxruntime as ort
    from conftest import _tiny_run
    [d] = export_run(_tiny_run(tmp_path, "mlp", {"name": "mlp", "window": 5, "params": {"hidden": 16}},
                               {"search_space": {"lr": [0.003]}, "trading": {"long_only": False, "min_confidence": 0.5},
                                "label": {"horizon": 1, "band": 0.002}}))
    m = Manifest.read_and_verify(d)
    assert m.card["position_rule"] == {"long_only": False, "min_confidence": 0.5} and len(m.card["classes"]) == 3
    rng = np.random.default_rng(0)
    x = np.stack([rng.choice(m.reference[f].sample, size=(2000, 5)) for f in m.features.names], axis=-1).astype(np.float32)
    signal, position, proba = ort.InferenceSession(str(d / "model.onnx")).run(None, {"features": x})
    from atf.trainers.supervised import positions_from_proba
    want = positions_from_proba(proba, np.asarray(m.card["classes"]), False, 0.5)
    assert np.array_equal(position[:, 0], want) and (position != signal).any()         # the confidence floor acted
    assert np.array_equal(signal[:, 0], np.asarray(m.card["classes"])[proba.argmax(1)])


def test_export_cli_and_refusals(exported, tmp_path):
    atf = str(Path(sys.executable).parent / "atf")
    res = subprocess.run([atf, "export", str(exported["mlp"]["run"])], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "parity on" in res.stdout and "ONNX" in res.stdout
    bad = subprocess.run([atf, "export", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a finished experiment run" in bad.stderr
    with pytest.raises(ExportError, match="no fold"):
        export_run(exported["mlp"]["run"], keys=["MSFT_native"])


def test_reference_stats_shares_sum_to_one():
    import pandas as pd
    rng = np.random.default_rng(0)
    ref = reference_stats(pd.DataFrame({"a": rng.normal(size=5000), "b": rng.exponential(size=5000)}))
    for r in ref.values():
        assert np.isclose(sum(r["fractions"]), 1) and len(r["fractions"]) == len(r["edges"]) + 1
        assert np.all(np.diff(r["sample"]) >= 0) and len(r["sample"]) == 1000
        assert all(abs(f - 0.1) < 0.01 for f in r["fractions"])           # deciles hold a tenth each


@pytest.mark.parametrize("name, model, extra", [
    ("sac", {"name": "sac", "window": 5, "params": {"net_arch": "tiny", "learning_starts": 0, "buffer_size": 10000}},
     {"rl": {"total_timesteps": 128, "eval_every": 128, "n_envs": 1}, "search_space": {"gamma": [0.99]},
      "trading": {"long_only": False}}),
    ("dqn", {"name": "dqn", "window": 5, "params": {"net_arch": "tiny", "learning_starts": 0, "buffer_size": 10000}},
     {"rl": {"total_timesteps": 128, "eval_every": 128, "n_envs": 1, "action": "discrete3"}, "search_space": {"gamma": [0.99]},
      "trading": {"long_only": False}}),
    ("tcn", {"name": "tcn", "window": 8, "params": {"channels": 8}}, {"search_space": {"lr": [0.003]}}),
    ("gru", {"name": "gru", "window": 8, "params": {"hidden": 8}}, {"search_space": {"lr": [0.003]}}),
    ("logistic", {"name": "logistic"}, {"search_space": {"C": [0.1]}}),
])
def test_every_model_kind_exports_with_parity(tmp_path, name, model, extra):
    "Continuous (SAC) and Q-learning (DQN) agents, the causal TCN, the GRU and the logistic learner: all formats within tolerance."
    from conftest import _tiny_run
    [d] = export_run(_tiny_run(tmp_path, name, model, extra))
    m = json.loads((d / "manifest.json").read_text())
    assert all(m["parity"][f] <= PARITY_TOLERANCE for f in ("pickle", "torchscript", "onnx")) and m["parity"]["rows"] > 200
    if name == "sac": assert m["card"]["levels"] is None and m["card"]["action"] == "continuous"
    if name == "dqn": assert m["card"]["levels"] == [-1.0, 0.0, 1.0]


def test_export_experiments_and_serving_hold_no_model_kind_branch():
    "Model kinds live in atf.learners only: export, experiments and serving name no learner class and test no kind."
    import re
    import atf
    root = Path(atf.__file__).parent
    for path in [root / "export.py", root / "experiments.py", *sorted((root / "serving").glob("*.py"))]:
        found = re.findall(r"SupervisedLearner|AgentLearner|SupervisedTrainer|RLTrainer|\.kind\b|\bkind ==|\w\[[\"']kind[\"']\]"
                           r"|[\"'](?:rl|supervised)[\"']|positions_from_proba", path.read_text())
        assert not found, f"{path.relative_to(root)}: {found}"


def test_a_close_only_model_is_served_from_closes(tmp_path):
    "sp500_index has closes only: the manifest says so (bar_fields, no ATR or volume feature) and bars of closes serve."
    from fastapi.testclient import TestClient
    from conftest import _tiny_run
    from atf.data import load_dataset
    from atf.serving.app import ServeConfig, create_app
    [d] = export_run(_tiny_run(tmp_path, "logistic", {"name": "logistic"}, {
        "search_space": {"C": [0.1]}, "data": {"dataset": "sp500_index", "assets": ["SP500"], "start": "2000-01-01", "end": "2006-12-31"}}))
    m = Manifest.read_and_verify(d)
    assert m.bar_fields == ["close"] and m.features.spec["atr_window"] is None and m.features.spec["volume_window"] is None
    closes = load_dataset("sp500_index", "SP500").loc["2007-01-01":].iloc[:m.min_bars]
    bars = [{"time": str(t), "close": float(c)} for t, c in closes["close"].items()]
    with TestClient(create_app(ServeConfig(model_dir=str(d), no_auth=True))) as client:
        r = client.post("/predict", json={"bars": bars})
        assert r.status_code == 200 and r.json()["model"] == "primary", r.text
        ohlc = [{**b, "open": b["close"], "high": b["close"], "low": b["close"]} for b in bars]
        bad = client.post("/predict", json={"bars": ohlc})
        assert bad.status_code == 422 and "open" in bad.text
