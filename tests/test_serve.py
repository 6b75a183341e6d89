"""The inference service, started for real with uvicorn on 127.0.0.1: endpoints, auth, validation, failover, shutdown."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from atf.data import load_dataset
from atf.features import FeatureSpec, make_features

ATF = str(Path(sys.executable).parent / "atf")
KEY = "test-key-123"
H = {"X-API-Key": KEY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@contextmanager
def server(model_dir, *args, env: dict | None = None):
    "`atf serve` in a subprocess; yields (base url, process); stops it with SIGTERM."
    port = free_port()
    proc = subprocess.Popen([ATF, "serve", str(model_dir), "--port", str(port), *args], text=True,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        if proc.poll() is not None: raise AssertionError(f"server exited: {proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200: break
        except httpx.TransportError: pass
        if time.time() > deadline: proc.kill(); raise AssertionError("server did not start")
        time.sleep(0.2)
    try: yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try: proc.wait(15)
            except subprocess.TimeoutExpired: proc.kill()


def windows(model_dir, n: int = 8, start: str = "2011-01-01", step: int = 1) -> tuple[np.ndarray, dict]:
    "Raw feature windows of real IBM bars (by default after the run's data: never trained on), in the manifest's order."
    m = json.loads((Path(model_dir) / "manifest.json").read_text())
    df = load_dataset("us_stocks", "IBM")
    F = make_features(df, FeatureSpec(**m["features"]["spec"])).loc[start:].dropna().to_numpy(np.float32)
    W = m["window"]
    return np.stack([F[i * step:i * step + W] for i in range(n)]), m


def bars_body(n: int, start: str = "2011-01-01") -> dict:
    df = load_dataset("us_stocks", "IBM").loc[start:].iloc[:n]
    return {"bars": [{"time": str(t), **{k: float(r[k]) for k in ("open", "high", "low", "close", "volume")}}
                     for t, r in df.iterrows()]}


@pytest.fixture(scope="module")
def live(exported):
    "One server with auth and a fallback model, shared by the read-only tests."
    with server(exported["mlp"]["model"], "--api-key", KEY, "--fallback", str(exported["lstm"]["model"]),
                "--max-batch", "64", "--max-body-bytes", "400000") as (url, _):
        yield url


def test_health_ready_model_metrics(live):
    assert httpx.get(live + "/health").json() == {"status": "ok"}
    r = httpx.get(live + "/ready"); assert r.status_code == 200 and r.json()["ready"]
    m = httpx.get(live + "/model").json()
    assert m["key"] == "IBM_native" and "sample" not in m["reference"]["ret_1"] and m["parity"]["onnx"] <= 1e-5
    text = httpx.get(live + "/metrics").text
    assert "atf_requests_total" in text and "atf_model_ready 1.0" in text


def test_predictions_over_http_equal_the_research_model(live, exported):
    "Served probabilities = the eager PyTorch pipeline on the same windows (onnxruntime behind HTTP, to 1e-5)."
    import torch
    from atf.trainers.supervised import SupervisedTrainer, positions_from_proba
    X, m = windows(exported["mlp"]["model"], 16)
    r = httpx.post(live + "/predict", json={"features": X.tolist()}, headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "primary" and body["fallback_reason"] is None and len(body["predictions"]) == 16
    got = np.array([p["probability"] for p in body["predictions"]])
    t = SupervisedTrainer.load(exported["mlp"]["run"] / "model_IBM_native.pkl")
    Z = (X.reshape(-1, X.shape[2]) - t.scaler.mean_) / t.scaler.scale_
    with torch.no_grad():
        want = torch.softmax(t.model.eval()(torch.from_numpy(Z.reshape(X.shape).astype(np.float32))), 1).numpy()
    assert np.abs(got - want).max() <= 1e-5
    assert [p["position"] for p in body["predictions"]] == positions_from_proba(want, t.classes_).tolist()


def test_bars_give_the_same_answer_as_their_features(live, exported):
    body = bars_body(400)
    r = httpx.post(live + "/predict", json=body, headers=H).json()
    m = json.loads((exported["mlp"]["model"] / "manifest.json").read_text())
    df = load_dataset("us_stocks", "IBM").loc["2011-01-01":].iloc[:400]
    F = make_features(df, FeatureSpec(**m["features"]["spec"])).to_numpy(np.float32)[-m["window"]:]
    r2 = httpx.post(live + "/predict", json={"features": [F.tolist()]}, headers=H).json()
    assert r["predictions"] == r2["predictions"]
    few = httpx.post(live + "/predict", json=bars_body(50), headers=H)
    assert few.status_code == 422 and f"at least {m['min_bars']} items" in few.text and '"bars"' in few.text


def test_auth(live):
    body = bars_body(400)
    assert httpx.post(live + "/predict", json=body).status_code == 401
    assert httpx.post(live + "/predict", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.post(live + "/admin/reload").status_code == 401
    assert httpx.post(live + "/admin/reload", headers=H).json()["ready"] is True
    assert httpx.get(live + "/health").status_code == 200                     # liveness needs no key


@pytest.mark.parametrize("payload, status, needle", [
    ('{"features": [[[NaN, 1, 2]]]}', 422, "features"),
    ('{"features": [[["a"]]]}', 422, "features"),
    ('{"features": []}', 422, "at least 1 item"),
    ('{}', 422, "exactly one of"),
    ('{"features": [[[0.0, 1.0]]], "bars": []}', 422, '"bars"'),
    ('{"features": [[[0.0, 1.0]]]}', 422, 'at least 15 items'),
    ('{"features": [[[1e400]]]}', 422, "features"),
    ('{"bogus": 1}', 422, "bogus"),
    ('not json', 400, "not valid JSON"),
])
def test_bad_inputs_are_named(live, payload, status, needle):
    r = httpx.post(live + "/predict", content=payload, headers={**H, "content-type": "application/json"})
    assert r.status_code == status and needle in r.text, r.text


def test_wrong_feature_count_and_size_limits(live, exported):
    X, m = windows(exported["mlp"]["model"], 2)
    r = httpx.post(live + "/predict", json={"features": X[:, :, :-1].tolist()}, headers=H)
    assert r.status_code == 422 and f"at least {X.shape[2]} items" in r.text and '"loc":["body","features",0,0]' in r.text
    big, _ = windows(exported["mlp"]["model"], 65)
    assert httpx.post(live + "/predict", json={"features": big.tolist()}, headers=H).status_code == 413      # > max batch
    huge = json.dumps({"features": [[[0.0] * 15] * 5] * 2000})
    assert len(huge) > 400_000
    r = httpx.post(live + "/predict", content=huge, headers={**H, "content-type": "application/json"})
    assert r.status_code == 413
    bad_bars = bars_body(400); bad_bars["bars"][350]["high"] = bad_bars["bars"][350]["low"] / 2
    r = httpx.post(live + "/predict", json=bad_bars, headers=H)
    assert r.status_code == 422 and "high" in r.text


def test_status_and_latency_percentiles(live):
    for _ in range(5): httpx.post(live + "/predict", json=bars_body(400), headers=H)
    st = httpx.get(live + "/status").json()
    assert st["ready"] and st["circuit"]["state"] == "closed" and st["request_latency"]["n"] >= 5
    assert 0 < st["request_latency"]["p50_ms"] <= st["request_latency"]["p99_ms"]
    assert 'atf_request_latency_quantile_seconds{quantile="0.99"}' in httpx.get(live + "/metrics").text


def test_failover_on_error_and_timeout(exported):
    fb = str(exported["lstm"]["model"])
    X, _ = windows(exported["mlp"]["model"], 3)
    with server(exported["mlp"]["model"], "--fallback", fb, env={"ATF_SERVE_FAULT": "raise"}) as (url, _):
        r = httpx.post(url + "/predict", json=bars_body(400)).json()
        assert r["model"] == "fallback" and r["fallback_reason"].startswith("error: RuntimeError") and r["model_key"] == "IBM_native"
        r = httpx.post(url + "/predict", json={"features": X.tolist()}).json()      # other features: flat, said so
        assert r["model"] == "flat" and all(p["position"] == 0 for p in r["predictions"])
        assert 'atf_failovers_total{reason="error"}' in httpx.get(url + "/metrics").text
    with server(exported["mlp"]["model"], "--timeout", "0.2", env={"ATF_SERVE_FAULT": "delay:800"}) as (url, _):
        r = httpx.post(url + "/predict", json={"features": X.tolist()}).json()
        assert r["model"] == "flat" and r["fallback_reason"].startswith("timeout")


def test_latency_budget_opens_the_breaker_then_the_primary_is_retried(exported):
    X, _ = windows(exported["mlp"]["model"], 1)
    with server(exported["mlp"]["model"], "--latency-budget", "20", "--cooldown", "1.5",
                env={"ATF_SERVE_FAULT": "delay:60"}) as (url, _):
        first = httpx.post(url + "/predict", json={"features": X.tolist()}).json()
        assert first["model"] == "primary"                                   # slow but valid: answered, breaker opens
        second = httpx.post(url + "/predict", json={"features": X.tolist()}).json()
        assert second["model"] == "flat" and "circuit open: latency" in second["fallback_reason"]
        assert httpx.get(url + "/status").json()["circuit"]["state"] == "open"
        time.sleep(1.6)
        assert httpx.post(url + "/predict", json={"features": X.tolist()}).json()["model"] == "primary"   # half-open try


def test_drift_is_measured_and_can_trigger_failover(exported):
    m = json.loads((exported["mlp"]["model"] / "manifest.json").read_text())
    X, m = windows(exported["mlp"]["model"], 60, start=m["training"]["start"], step=8)   # like the training bars
    with server(exported["mlp"]["model"], "--drift-min-rows", "40", "--failover-on-drift") as (url, _):
        assert httpx.get(url + "/drift").json()["features"] == {}
        for i in range(0, 60, 20): httpx.post(url + "/predict", json={"features": X[i:i + 20].tolist()})
        calm = httpx.get(url + "/drift").json()
        assert calm["rows"] == 60 and set(calm["features"]) == set(m["features"]["names"])
        assert not calm["features"]["vol_10"]["drifted"], calm["features"]["vol_10"]
        shifted = X.copy(); shifted[:, :, m["features"]["names"].index("vol_10")] *= 8    # a volatility regime never seen
        for i in range(0, 60, 20): httpx.post(url + "/predict", json={"features": shifted[i:i + 20].tolist()})
        d = httpx.get(url + "/drift").json()
        assert d["drifted"] and d["features"]["vol_10"]["drifted"] and d["features"]["vol_10"]["psi"] > 0.25
        r = httpx.post(url + "/predict", json={"features": shifted[:1].tolist()}).json()
        assert r["model"] == "flat" and r["fallback_reason"].startswith("drift")
        assert 'atf_drift_psi{feature="vol_10"}' in httpx.get(url + "/metrics").text


def test_missing_or_tampered_model_serves_the_fallback_and_reports_503(exported, tmp_path):
    with server(tmp_path / "nowhere", "--fallback", str(exported["mlp"]["model"])) as (url, proc):
        r = httpx.get(url + "/ready"); assert r.status_code == 503 and "does not exist" in r.json()["reason"]
        p = httpx.post(url + "/predict", json=bars_body(400)).json()
        assert p["model"] == "fallback" and "primary unavailable" in p["fallback_reason"]
        assert proc.poll() is None
    bad = tmp_path / "tampered"; shutil.copytree(exported["mlp"]["model"], bad)
    with open(bad / "pipeline.pkl", "ab") as f: f.write(b"\0")
    with server(bad) as (url, _):
        r = httpx.get(url + "/ready"); assert r.status_code == 503 and "pipeline.pkl: sha256 differs" in r.json()["reason"]
        assert httpx.post(url + "/predict", json=bars_body(400)).json()["model"] == "flat"
        shutil.copyfile(exported["mlp"]["model"] / "pipeline.pkl", bad / "pipeline.pkl")     # repaired on disk
        assert httpx.post(url + "/admin/reload").json()["ready"] and httpx.get(url + "/ready").status_code == 200


def test_agent_is_served_with_its_state(exported):
    import onnxruntime as ort
    d = exported["ppo"]["model"]
    X, m = windows(d, 10)
    state = np.c_[np.zeros(10), np.zeros(10)].astype(np.float32)
    with server(d) as (url, _):
        r = httpx.post(url + "/predict", json={"features": X.tolist(), "state": state.tolist()}).json()
        assert r["model"] == "primary" and m["state"] == ["position", "unrealised_log_pnl"]
        want = ort.InferenceSession(str(d / "model.onnx")).run(None, {"features": X, "state": state})[1][:, 0]
        assert [p["position"] for p in r["predictions"]] == want.tolist() and set(want) <= set(m["levels"])
        bad = httpx.post(url + "/predict", json={"features": X.tolist(), "state": [[0.0]] * 10})
        assert bad.status_code == 422 and "state" in bad.text


def test_sigterm_lets_the_request_in_flight_finish(exported):
    X, _ = windows(exported["mlp"]["model"], 1)
    with server(exported["mlp"]["model"], "--timeout", "5", env={"ATF_SERVE_FAULT": "delay:2500"}) as (url, proc):
        result = {}
        t = threading.Thread(target=lambda: result.update(r=httpx.post(url + "/predict", json={"features": X.tolist()}, timeout=20)))
        t.start(); time.sleep(1.0)                              # the request is in flight (2.5 s of work)
        proc.send_signal(signal.SIGTERM)
        t.join(20)
        assert result["r"].status_code == 200 and result["r"].json()["model"] == "primary"
        assert proc.wait(15) in (0, -signal.SIGTERM)      # uvicorn re-raises the signal after a clean shutdown
        out = proc.stdout.read()
        assert "Shutting down" in out and "Finished server process" in out


def test_serving_never_imports_torch(exported):
    code = ("import sys; from atf.serve import ServeConfig, create_app; "
            f"create_app(ServeConfig(model_dir={str(exported['mlp']['model'])!r})); "
            "bad = [m for m in ('torch', 'stable_baselines3', 'sklearn', 'optuna') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_drift_statistics_agree_with_scipy():
    from scipy.stats import ks_2samp
    from atf.serve import ks_statistic, psi
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), np.sort(rng.normal(0.3, 1.2, size=1000))
    assert abs(ks_statistic(a, b) - ks_2samp(a, b).statistic) < 1e-12
    edges = np.quantile(b, np.linspace(0, 1, 11)[1:-1])
    assert psi(b, edges, [0.1] * 10) < 1e-3 and psi(a + 2, edges, [0.1] * 10) > 1


def test_schemathesis_finds_no_server_error(exported, tmp_path):
    "Property-based requests generated from the app's OpenAPI schema: no 5xx, responses match the schema."
    exe = str(Path(sys.executable).parent / "schemathesis")
    with server(exported["mlp"]["model"], "--api-key", KEY, "--fallback", str(exported["lstm"]["model"])) as (url, _):
        res = subprocess.run([exe, "run", url + "/openapi.json", "-H", f"X-API-Key: {KEY}", "--checks",
                              "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                              "--max-examples", "60", "--seed", "1", "--no-color", "--report", "junit",
                              "--report-dir", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, re.sub(r"\[[-0-9.e+, \[\]]{200,}\]", "[...]", res.stdout)[-6000:]
    cases = int(re.search(r"(\d+) generated", res.stdout).group(1))
    assert cases >= 100
    print(f"schemathesis: {cases} generated test cases, no failure")


def test_extreme_inputs_never_produce_a_number_out_of_nothing(exported):
    "Inputs beyond float32 are refused by position; inputs that overflow the model give the fallback, not NaN."
    with server(exported["mlp"]["model"], "--api-key", KEY) as (live, _): _extreme(live)


def _extreme(live):
    r = httpx.post(live + "/predict", json={"features": [[[1e300] + [0.0] * 14] * 5]}, headers=H)
    assert r.status_code == 422 and '"loc":["body","features",0,0,0]' in r.text and "float32" in r.text
    r = httpx.post(live + "/predict", json={"features": [[[3e38] * 15] * 5]}, headers=H).json()
    assert r["model"] != "primary" and "not finite" in r["fallback_reason"]
    assert all(np.isfinite(p["position"]) for p in r["predictions"])


def test_cors_is_off_unless_origins_are_given(exported):
    d = exported["mlp"]["model"]
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with server(d) as (url, _):
        r = httpx.options(url + "/predict", headers=pre)
        assert "access-control-allow-origin" not in r.headers
    with server(d, "--cors", "https://lab.example") as (url, _):
        ok = httpx.options(url + "/predict", headers={**pre, "Origin": "https://lab.example"})
        assert ok.headers.get("access-control-allow-origin") == "https://lab.example"
        assert "access-control-allow-origin" not in httpx.options(url + "/predict", headers=pre).headers


def test_a_broken_graph_with_a_matching_manifest_is_refused_not_crashed(exported, tmp_path):
    "Garbage in model.onnx whose sha256 the manifest agrees with: load fails with a reason, the service stays up."
    from atf.export import sha256_of
    from atf.serve import ServeConfig, Service
    bad = tmp_path / "broken"; shutil.copytree(exported["mlp"]["model"], bad)
    (bad / "model.onnx").write_bytes(b"not an onnx graph")
    m = json.loads((bad / "manifest.json").read_text()); m["files"]["model.onnx"] = sha256_of(bad / "model.onnx")
    (bad / "manifest.json").write_text(json.dumps(m))
    svc = Service(ServeConfig(model_dir=str(bad), fallback_dir=str(exported["lstm"]["model"])))
    assert svc.primary is None and "model.onnx cannot be loaded" in svc.primary_error and svc.fallback is not None
    (bad / "manifest.json").write_text("{not json")
    assert "not valid JSON" in Service(ServeConfig(model_dir=str(bad))).primary_error
