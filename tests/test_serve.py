"""The inference service, started for real with uvicorn on 127.0.0.1: endpoints, auth, validation, failover, shutdown.
Attacks and failure modes (issue 9 part B) that need more set-up are in test_serve_hardening.py."""
import asyncio
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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

SERVE = [sys.executable, "-m", "atf.serving.cli"]      # what `atf serve` runs (atf.cli adds it with add_serve_command)
FAULTY = [sys.executable, str(Path(__file__).with_name("faulty_server.py"))]   # the same, with a fault in the primary
KEY = "test-key-123"
H = {"X-API-Key": KEY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@contextmanager
def server(model_dir, *args, env: dict | None = None, nofile: int | None = None, fault: str | None = None):
    """`atf serve` in a subprocess on 127.0.0.1; yields (base url, process); `process.log()` is its output so far.
    `fault` ("raise" or "delay:MS") serves through tests/faulty_server.py, whose primary raises or is slow."""
    port = free_port()
    out = tempfile.NamedTemporaryFile("w+", prefix="atf-serve-", suffix=".log", delete=False)
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
    proc = subprocess.Popen([*([*FAULTY, fault] if fault else SERVE), str(model_dir), "--port", str(port), *args], text=True, preexec_fn=limit,
                            env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    proc.log = lambda: Path(out.name).read_text()
    proc.port = port
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    try:
        while True:
            if proc.poll() is not None: raise AssertionError(f"server exited: {proc.log()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200: break
            except httpx.TransportError: pass
            if time.time() > deadline: proc.kill(); raise AssertionError("server did not start")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try: proc.wait(15)
            except subprocess.TimeoutExpired: proc.kill(); proc.wait(5)
        out.close(); os.unlink(out.name)


def metric(text: str, name: str, **labels) -> float:
    "One sample of a Prometheus text exposition (0 when absent)."
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith(name + want + " "): return float(line.rsplit(" ", 1)[1])
    return 0.0


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


def post_raw(url: str, body: bytes | str, content_type: str | None = "application/json", key: str | None = KEY) -> httpx.Response:
    headers = {**({"content-type": content_type} if content_type else {}), **({"X-API-Key": key} if key else {})}
    return httpx.post(url + "/predict", content=body, headers=headers)


@pytest.fixture(scope="module")
def live(exported):
    "One server with auth and a fallback model, shared by the read-only tests."
    with server(exported["mlp"]["model"], "--api-key", KEY, "--fallback", str(exported["lstm"]["model"]),
                "--max-batch", "64", "--max-body-bytes", "400000") as (url, _):
        yield url


def test_health_ready_model_metrics(live):
    assert httpx.get(live + "/health").json() == {"status": "ok"}
    r = httpx.get(live + "/ready"); assert r.status_code == 200 and r.json()["ready"]
    assert r.json()["model"] == "mlp" and r.json()["learner"] == "SupervisedLearner" and "kind" not in r.json()
    m = httpx.get(live + "/model", headers=H).json()
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
    assert all(p["action"] is None for p in body["predictions"])                 # a classifier: probabilities, no action
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
    utc = bars_body(400); utc["bars"] = [{**b, "time": b["time"].replace(" ", "T") + "+00:00"} for b in utc["bars"]]
    assert httpx.post(live + "/predict", json=utc, headers=H).json()["predictions"] == r["predictions"]   # offsets: read as UTC


def test_auth(live):
    "Only /health, /ready and /metrics are public; everything else, unknown paths included, needs the key."
    body = bars_body(400)
    assert httpx.post(live + "/predict", json=body).status_code == 401
    assert httpx.post(live + "/predict", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.post(live + "/admin/reload").status_code == 401
    assert httpx.post(live + "/admin/reload", headers=H).json()["ready"] is True
    for path in ("/health", "/ready", "/metrics"): assert httpx.get(live + path).status_code == 200, path
    for path in ("/model", "/status", "/drift", "/openapi.json", "/docs", "/nowhere"):
        r = httpx.get(live + path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "APIKey", path
    for path in ("/model", "/status", "/drift", "/openapi.json"): assert httpx.get(live + path, headers=H).status_code == 200, path
    assert 'atf_errors_total{kind="auth"}' in httpx.get(live + "/metrics").text


@pytest.mark.parametrize("payload, status, needle", [
    ('{"features": [[[NaN, 1, 2]]]}', 422, "finite number"),
    ('{"features": [[["a"]]]}', 422, "valid number"),
    (json.dumps({"features": [[[True] + [0.0] * 14] * 5]}), 422, '"loc":["body","features",0,0,0]'),
    ('{"features": [[["1.5"]]]}', 422, "valid number"),
    ('{"features": []}', 422, "at least 1 item"),
    ('{"features": null}', 422, "valid array"),
    ('{}', 422, "exactly one of"),
    ('[]', 422, "object"),
    ('{"features": [[[0.0, 1.0]]], "bars": []}', 422, '"bars"'),
    ('{"features": [[[0.0, 1.0]]]}', 422, 'at least 15 items'),
    ('{"features": [[[1e400]]]}', 422, "finite number"),
    ('{"bogus": 1}', 422, "bogus"),
    ('not json', 400, "not valid JSON"),
    ('', 400, "not valid JSON"),
    ('{"features": ' + "[" * 2000 + "]" * 2000 + "}", 400, "recursion limit"),
    ('{"features": [[[' + "9" * 400 + ']]]}', 422, '"loc":["body","features",0,0,0]'),
    ('{"features": [[[' + "-" + "9" * 400 + ']]]}', 422, '"loc":["body","features",0,0,0]'),
    ('{"features": [[[1e39]]]}', 422, "float32"),
    ('{"features": [[[1]]], "state": [[0]]}', 422, "state"),
])
def test_bad_inputs_are_a_4xx_that_names_the_problem(live, payload, status, needle):
    "B1: hostile JSON (2,000 levels of nesting, 400-digit integers) is a 4xx naming the problem, never a 500."
    r = post_raw(live, payload)
    assert r.status_code == status and needle in r.text, r.text


def test_invalid_utf8_and_huge_error_lists_stay_small(live):
    r = post_raw(live, b'{"features": "\xff"}')
    assert r.status_code in (400, 422) and len(r.content) < 1000
    r = post_raw(live, json.dumps({"features": [[["x"] * 15] * 5] * 64}))          # 4,800 bad values
    assert r.status_code == 422 and len(r.json()["detail"]) == 1                      # the first is named, not all


def test_only_json_numbers_and_only_application_json(live, exported):
    "B10: booleans and numeric strings are not numbers; a body that is not application/json is refused."
    X, _ = windows(exported["mlp"]["model"], 1)
    good = json.dumps({"features": X.tolist()})
    assert post_raw(live, good).status_code == 200
    assert post_raw(live, good, "application/json; charset=utf-8").status_code == 200
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        r = post_raw(live, good, ctype)
        assert r.status_code == 415 and "application/json" in r.json()["detail"], ctype
    for bad in (True, "1.5", None):
        Y = X.tolist(); Y[0][2][3] = bad
        r = post_raw(live, json.dumps({"features": Y}))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "features", 0, 2, 3], (bad, r.text)


def test_the_published_schema_is_the_enforced_one(live, exported):
    "B10: bodies the published schema accepts are answered, bodies it refuses get a 4xx: {} included."
    import jsonschema
    spec = httpx.get(live + "/openapi.json", headers=H).json()
    req = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert req == {"$ref": "#/components/schemas/PredictRequest"}
    validator = jsonschema.Draft202012Validator({**spec["components"]["schemas"]["PredictRequest"], "components": spec["components"]})
    X, _ = windows(exported["mlp"]["model"], 2)
    bars = bars_body(300)
    cases = [{}, {"features": X.tolist()}, bars, {"features": X.tolist(), **bars}, {"features": X[:, :, :3].tolist()},
             {"features": X.tolist(), "state": [[0.0]] * 2}, {"features": []}, {"features": X.tolist(), "extra": 1},
             {"features": [[[True] * 15] * 5]}, {"bars": bars["bars"][:10]}, {"bars": [{**b, "volume": -1.0} for b in bars["bars"]]},
             {"bars": [{**b, "time": "yesterday"} for b in bars["bars"]]}, {"features": (X * 1e38).tolist()}]
    for body in cases:
        valid, status = validator.is_valid(body), httpx.post(live + "/predict", json=body, headers=H).status_code
        assert (status == 200) == valid and (valid or 400 <= status < 500), (list(body), valid, status)
    assert spec["components"]["schemas"]["PredictRequest"]["oneOf"] == [{"required": ["features"]}, {"required": ["bars"]}]
    assert spec["paths"]["/predict"]["post"]["security"] == [{"APIKeyHeader": []}] and "security" not in spec["paths"]["/health"]["get"]


def test_wrong_feature_count_and_size_limits(live, exported):
    X, m = windows(exported["mlp"]["model"], 2)
    r = httpx.post(live + "/predict", json={"features": X[:, :, :-1].tolist()}, headers=H)
    assert r.status_code == 422 and f"at least {X.shape[2]} items" in r.text and '"loc":["body","features",0,0]' in r.text
    big, _ = windows(exported["mlp"]["model"], 65)
    r = httpx.post(live + "/predict", json={"features": big.tolist()}, headers=H)                  # > max batch: the schema's maxItems
    assert r.status_code == 422 and "at most 64 items" in r.text and r.json()["detail"][0]["loc"] == ["body", "features"]
    huge = json.dumps({"features": [[[0.0] * 15] * 5] * 2000})
    assert len(huge) > 400_000
    r = httpx.post(live + "/predict", content=huge, headers={**H, "content-type": "application/json"})
    assert r.status_code == 413
    bad_bars = bars_body(400); bad_bars["bars"][350]["high"] = bad_bars["bars"][350]["low"] / 2
    r = httpx.post(live + "/predict", json=bad_bars, headers=H)
    assert r.status_code == 422 and "high" in r.text


def test_status_and_latency_percentiles(live):
    for _ in range(5): httpx.post(live + "/predict", json=bars_body(400), headers=H)
    st = httpx.get(live + "/status", headers=H).json()
    assert st["ready"] and st["circuit"]["state"] == "closed" and st["request_latency"]["n"] >= 5
    assert 0 < st["request_latency"]["p50_ms"] <= st["request_latency"]["p99_ms"]
    assert 'atf_request_latency_quantile_seconds{quantile="0.99"}' in httpx.get(live + "/metrics").text


def test_every_answer_is_counted(exported):
    "B2: /metrics counts every answer by status: 4xx, aborted uploads (499) and errors included."
    X, _ = windows(exported["mlp"]["model"], 1)
    with server(exported["mlp"]["model"], "--api-key", KEY, "--max-body-bytes", "20000") as (url, proc):
        sent = {"200": 2, "400": 2, "401": 1, "413": 1, "415": 1, "422": 2}
        for _ in range(2): assert post_raw(url, json.dumps({"features": X.tolist()})).status_code == 200
        assert post_raw(url, '{"features": ' + "[" * 2000 + "]" * 2000 + "}").status_code == 400
        assert post_raw(url, "{").status_code == 400
        assert post_raw(url, "{}", key=None).status_code == 401
        assert post_raw(url, json.dumps({"features": X.tolist() * 50})).status_code == 413             # 20 kB and more
        assert post_raw(url, "{}", "text/plain").status_code == 415
        assert post_raw(url, '{"features": [[[' + "9" * 400 + "]]]}").status_code == 422
        assert post_raw(url, "{}").status_code == 422
        with socket.create_connection(("127.0.0.1", proc.port)) as c:              # half a body, then gone
            c.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
                      "Content-Length: 1000\r\n\r\n{\"features\":".encode())
            time.sleep(0.3)
        time.sleep(0.3)
        text = httpx.get(url + "/metrics").text
        for status, n in {**sent, "499": 1}.items():
            assert metric(text, "atf_requests_total", path="/predict", status=status) == n, (status, text)
        assert metric(text, "atf_client_disconnects_total") == 1


def test_an_exception_escaping_the_app_is_a_counted_500(caplog):
    "B2: an error that escapes every handler is answered 500 by the guard, logged once, and counted."
    import httpx as _httpx
    from atf.serving.app import Guard, ServeConfig, Service
    svc = Service(ServeConfig(no_auth=True))
    async def broken(scope, receive, send): raise RuntimeError("boom")
    async def call():
        transport = _httpx.ASGITransport(app=Guard(broken, svc, {"/boom"}))
        async with _httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/boom", json={})
    with caplog.at_level(logging.ERROR, logger="atf.serving.app"): r = asyncio.run(call())
    assert r.status_code == 500 and r.json() == {"detail": "internal error (logged on the server)"}
    assert [rec.exc_info[1].args for rec in caplog.records if rec.exc_info] == [("boom",)]
    from prometheus_client import generate_latest
    assert metric(generate_latest(svc.metrics.registry).decode(), "atf_requests_total", path="/boom", status="500") == 1


def test_failover_on_error_and_timeout(exported):
    fb = str(exported["lstm"]["model"])
    X, _ = windows(exported["mlp"]["model"], 3)
    with server(exported["mlp"]["model"], "--no-auth", "--fallback", fb, fault="raise") as (url, _):
        r = httpx.post(url + "/predict", json=bars_body(400)).json()
        assert r["model"] == "fallback" and r["fallback_reason"].startswith("error: RuntimeError") and r["model_key"] == "IBM_native"
        r = httpx.post(url + "/predict", json={"features": X.tolist()}).json()      # other features: flat, said so
        assert r["model"] == "flat" and all(p["position"] == 0 for p in r["predictions"])
        text = httpx.get(url + "/metrics").text           # every reason's series exists from start-up: count them
        assert metric(text, "atf_failovers_total", reason="error") == 1 and metric(text, "atf_failovers_total", reason="circuit open") == 1
    with server(exported["mlp"]["model"], "--no-auth", "--timeout", "0.2", fault="delay:800") as (url, _):
        r = httpx.post(url + "/predict", json={"features": X.tolist()}).json()
        assert r["model"] == "flat" and r["fallback_reason"].startswith("timeout")


def test_latency_budget_opens_the_breaker_then_the_primary_is_retried(exported):
    X, _ = windows(exported["mlp"]["model"], 1)
    with server(exported["mlp"]["model"], "--no-auth", "--latency-budget", "20", "--cooldown", "1.5",
                fault="delay:60") as (url, _):
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
    with server(exported["mlp"]["model"], "--no-auth", "--drift-min-rows", "40", "--failover-on-drift") as (url, _):
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
    with server(tmp_path / "nowhere", "--no-auth", "--fallback", str(exported["mlp"]["model"])) as (url, proc):
        r = httpx.get(url + "/ready"); assert r.status_code == 503 and "does not exist" in r.json()["reason"]
        p = httpx.post(url + "/predict", json=bars_body(400)).json()
        assert p["model"] == "fallback" and "primary unavailable" in p["fallback_reason"]
        assert proc.poll() is None
    bad = tmp_path / "tampered"; shutil.copytree(exported["mlp"]["model"], bad)
    with open(bad / "pipeline.pkl", "ab") as f: f.write(b"\0")
    with server(bad, "--api-key", KEY) as (url, _):
        r = httpx.get(url + "/ready"); assert r.status_code == 503 and "pipeline.pkl: sha256 differs" in r.json()["reason"]
        assert httpx.post(url + "/predict", json=bars_body(400), headers=H).json()["model"] == "flat"
        shutil.copyfile(exported["mlp"]["model"] / "pipeline.pkl", bad / "pipeline.pkl")     # repaired on disk
        assert httpx.post(url + "/admin/reload", headers=H).json()["ready"] and httpx.get(url + "/ready").status_code == 200


def test_no_model_still_validates_shapes_types_and_batch(exported, tmp_path):
    "B7: whatever the primary's state, bodies are checked: against the fallback's or the manifest's shapes, or types and batch."
    X, _ = windows(exported["lstm"]["model"], 2)
    with server(tmp_path / "nowhere", "--no-auth", "--max-batch", "8") as (url, _):          # nothing at all to answer with
        assert httpx.post(url + "/predict", json={"features": "abc"}).status_code == 422
        assert httpx.post(url + "/predict", json={"features": [[[0.0]]] * 100}).status_code == 422     # above max_batch
        r = httpx.post(url + "/predict", json={"features": X.tolist()})
        assert r.status_code == 503 and "does not exist" in r.json()["detail"]
    with server(tmp_path / "nowhere", "--no-auth", "--fallback", str(exported["lstm"]["model"])) as (url, _):
        assert httpx.post(url + "/predict", json={"features": "abc"}).status_code == 422
        assert httpx.post(url + "/predict", json={"features": [[[0.0] * 15] * 5]}).status_code == 422      # the fallback's window is 8
        assert httpx.post(url + "/predict", json={"features": [[[0.0] * 15] * 8] * 1000}).status_code == 422
        assert httpx.post(url + "/predict", json={"features": X.tolist()}).json()["model"] == "fallback"
    bad = tmp_path / "tampered"; shutil.copytree(exported["mlp"]["model"], bad)
    (bad / "model.onnx").write_bytes(b"garbage")                        # its manifest is still readable: its shapes hold
    with server(bad, "--no-auth", "--fallback", str(exported["lstm"]["model"])) as (url, _):
        assert httpx.post(url + "/predict", json={"features": X.tolist()}).status_code == 422
        r = httpx.post(url + "/predict", json={"features": windows(exported["mlp"]["model"], 1)[0].tolist()}).json()
        assert r["model"] == "flat" and "primary unavailable" in r["fallback_reason"]


def test_rebalance_is_part_of_the_answer(exported, tmp_path):
    "The manifest's rebalance reaches the client; a manifest without one (atf-model/2 requires it) or with another is refused."
    X, _ = windows(exported["mlp"]["model"], 1)
    m = json.loads((exported["mlp"]["model"] / "manifest.json").read_text())
    for name, value in (("held", "on_change"), ("every", "every_bar"), ("missing", None), ("bad", "weekly")):
        d = tmp_path / name; shutil.copytree(exported["mlp"]["model"], d)
        (d / "manifest.json").write_text(json.dumps({**{k: v for k, v in m.items() if k != "rebalance"},
                                                     **({"rebalance": value} if value else {})}))
        with server(d, "--no-auth") as (url, _):
            if value not in ("on_change", "every_bar"):
                r = httpx.get(url + "/ready"); assert r.status_code == 503 and "rebalance" in r.json()["reason"], (name, r.text)
                continue
            r = httpx.post(url + "/predict", json={"features": X.tolist()}).json()
            assert r["model"] == "primary" and r["rebalance"] == value, (name, r)
            assert httpx.get(url + "/status").json()["rebalance"] == value


def test_agent_is_served_with_its_state(exported):
    import onnxruntime as ort
    d = exported["ppo"]["model"]
    X, m = windows(d, 10)
    state = np.c_[np.zeros(10), np.zeros(10)].astype(np.float32)
    with server(d, "--no-auth") as (url, _):
        r = httpx.post(url + "/predict", json={"features": X.tolist(), "state": state.tolist()}).json()
        assert r["model"] == "primary" and m["state"] == ["position", "unrealised_log_pnl"]
        want = ort.InferenceSession(str(d / "model.onnx")).run(["position"], {"features": X, "state": state})[0][:, 0]
        assert [p["position"] for p in r["predictions"]] == want.tolist() and set(want) <= set(m["card"]["levels"])
        assert all(p["action"] is not None and p["probability"] is None for p in r["predictions"])
        no_state = httpx.post(url + "/predict", json={"features": X.tolist()})          # an agent's state is required
        assert no_state.status_code == 422 and '"loc":["body","state"]' in no_state.text
        bad = httpx.post(url + "/predict", json={"features": X.tolist(), "state": [[0.0]] * 10})
        assert bad.status_code == 422 and "state" in bad.text
        bad = httpx.post(url + "/predict", json={"features": X.tolist(), "state": state[:3].tolist()})
        assert bad.status_code == 422 and "one row of" in bad.text


def test_sigterm_lets_the_request_in_flight_finish(exported):
    X, _ = windows(exported["mlp"]["model"], 1)
    with server(exported["mlp"]["model"], "--no-auth", "--timeout", "5", fault="delay:2500") as (url, proc):
        result = {}
        t = threading.Thread(target=lambda: result.update(r=httpx.post(url + "/predict", json={"features": X.tolist()}, timeout=20)))
        t.start(); time.sleep(1.0)                              # the request is in flight (2.5 s of work)
        proc.send_signal(signal.SIGTERM)
        t.join(20)
        assert result["r"].status_code == 200 and result["r"].json()["model"] == "primary"
        assert proc.wait(15) in (0, -signal.SIGTERM)      # uvicorn re-raises the signal after a clean shutdown
        out = proc.log()
        assert "Shutting down" in out and "Finished server process" in out


def test_drift_statistics_agree_with_scipy():
    from scipy.stats import ks_2samp
    from atf.serving.drift import ks_statistic, psi
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), np.sort(rng.normal(0.3, 1.2, size=1000))
    assert abs(ks_statistic(a, b) - ks_2samp(a, b).statistic) < 1e-12
    edges = np.quantile(b, np.linspace(0, 1, 11)[1:-1])
    assert psi(b, edges, [0.1] * 10) < 1e-3 and psi(a + 2, edges, [0.1] * 10) > 1


SCHEMATHESIS_HOOKS = """
import json, pathlib, schemathesis
BARS = json.loads((pathlib.Path(__file__).parent / "bars.json").read_text())

@schemathesis.hook
def map_case(ctx, case):
    "Positive cases only: JSON Schema cannot say that bars must form a valid OHLC series, so real bars stand in."
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and isinstance(case.body, dict) and "bars" in case.body:
        case.body = {**case.body, "bars": BARS[-max(len(case.body["bars"]), 1):]}
    return case
"""


def run_schemathesis(url: str, workdir: Path, max_examples: int, seed: int = 1, workers: int = 1,
                     timeout: float = 900) -> tuple[int, str]:
    "schemathesis with every check against a running server; (cases generated, output). Fails on any failure."
    (workdir / "hooks.py").write_text(SCHEMATHESIS_HOOKS)
    (workdir / "bars.json").write_text(json.dumps(bars_body(600)["bars"]))
    exe = str(Path(sys.executable).parent / "schemathesis")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "hooks", "PYTHONPATH": str(workdir)}
    res = subprocess.run([exe, "run", url + "/openapi.json", "-H", f"X-API-Key: {KEY}", "--checks", "all",
                          "--max-examples", str(max_examples), "--seed", str(seed), "--no-color", "--workers", str(workers),
                          "--suppress-health-check", "all"],
                         capture_output=True, text=True, timeout=timeout, cwd=workdir, env=env)
    (workdir / f"schemathesis-seed{seed}.txt").write_text(res.stdout + res.stderr)      # the whole report, kept
    out = re.sub(r"\[[-0-9.e+, \[\]]{200,}\]", "[...]", res.stdout + res.stderr)
    assert res.returncode == 0, re.sub(r"\{[^{}]{300,}\}", "{...}", out)[-8000:]
    return int(re.search(r"(\d+) generated", out).group(1)), out


def test_schemathesis_finds_no_failure_with_every_check(exported, tmp_path):
    "Property-based requests from the published schema, every check (positive and negative data, auth, status codes,"
    " content types, response schemas, methods). The full run (>= 2,000 cases) is `python tests/test_serve.py schemathesis`."
    with server(exported["mlp"]["model"], "--api-key", KEY, "--fallback", str(exported["lstm"]["model"])) as (url, _):
        cases, _ = run_schemathesis(url, tmp_path, max_examples=40)
    assert cases >= 150
    print(f"schemathesis --checks all: {cases} generated test cases, no failure")


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
    with server(d, "--no-auth") as (url, _):
        r = httpx.options(url + "/predict", headers=pre)
        assert "access-control-allow-origin" not in r.headers
    with server(d, "--api-key", KEY, "--cors", "https://lab.example") as (url, _):
        ok = httpx.options(url + "/predict", headers={**pre, "Origin": "https://lab.example"})   # preflights carry no key
        assert ok.headers.get("access-control-allow-origin") == "https://lab.example"
        assert "access-control-allow-origin" not in httpx.options(url + "/predict", headers=pre).headers


def test_a_broken_graph_with_a_matching_manifest_is_refused_not_crashed(exported, tmp_path):
    "Garbage in model.onnx whose sha256 the manifest agrees with: load fails with a reason, the service stays up."
    from atf.data import file_sha256
    from atf.serving.app import ServeConfig, Service
    bad = tmp_path / "broken"; shutil.copytree(exported["mlp"]["model"], bad)
    (bad / "model.onnx").write_bytes(b"not an onnx graph")
    m = json.loads((bad / "manifest.json").read_text()); m["files"]["model.onnx"] = file_sha256(bad / "model.onnx")
    (bad / "manifest.json").write_text(json.dumps(m))
    svc = Service(ServeConfig(model_dir=str(bad), fallback_dir=str(exported["lstm"]["model"]), no_auth=True))
    assert svc.primary is None and "model.onnx cannot be loaded" in svc.primary_error and svc.fallback is not None
    (bad / "manifest.json").write_text("{not json")
    assert "not valid JSON" in Service(ServeConfig(model_dir=str(bad), no_auth=True)).primary_error


if __name__ == "__main__" and sys.argv[1:2] == ["schemathesis"]:
    # the full check, once by hand: python tests/test_serve.py schemathesis [TOTAL_CASES]
    # Runs of 400 examples per operation with seeds 1, 2, ... until TOTAL_CASES (default 2,000) cases have been
    # generated: one long run is far slower, as hypothesis grows its examples (hundreds of bars each) with their count.
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import _tiny_run
    from atf.export import export_run
    work = Path(tempfile.mkdtemp(prefix="atf-schemathesis-"))
    mlp = export_run(_tiny_run(work, "mlp", {"name": "mlp", "window": 5, "params": {"hidden": 16}}, {"search_space": {"lr": [0.003]}}))[0]
    lstm = export_run(_tiny_run(work, "lstm", {"name": "lstm", "window": 8, "params": {"hidden": 8}}, {"search_space": {"lr": [0.003]}}))[0]
    target, total, seed, t0 = int(sys.argv[2]) if len(sys.argv) > 2 else 2000, 0, 0, time.time()
    with server(mlp, "--api-key", KEY, "--fallback", str(lstm)) as (url, proc):
        while total < target:
            seed += 1
            cases, out = run_schemathesis(url, work, max_examples=400, seed=seed, timeout=3600)
            total += cases
            print(f"seed {seed}: {cases} cases, no failure ({time.time() - t0:.0f} s)", flush=True)
        errors = sum(int(m) for m in re.findall(r'atf_requests_total\{path="[^"]*",status="5\d\d"\} (\d+)', httpx.get(url + "/metrics").text))
    print(out[-2500:])
    print(f"schemathesis --checks all: {total} generated test cases over seeds 1-{seed}, no failure, "
          f"{errors} answers with a 5xx status on the server, {time.time() - t0:.0f} s")
