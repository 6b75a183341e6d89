"""The inference service under attack and in failure (issue 9 part B): aborted uploads, slow clients, auth set-up,
damaged manifests, reloads under load, one client's bad input, memory over many reloads, the container health check.
Real servers on 127.0.0.1 only; every loop is bounded."""
import asyncio
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from test_serve import H, KEY, SERVE, bars_body, free_port, metric, server, windows

ROOT = Path(__file__).resolve().parents[1]


def is_closed(sock: socket.socket, wait: float = 0.5) -> bool:
    "True when the server has closed this connection (EOF or reset, after any answer it wrote)."
    sock.settimeout(wait)
    try:
        while sock.recv(65536): pass
        return True
    except (ConnectionResetError, BrokenPipeError): return True
    except (socket.timeout, BlockingIOError): return False


def head(path: str = "/predict", length: int = 0, key: str | None = KEY) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
            + (f"X-API-Key: {key}\r\n" if key else "") + "\r\n").encode()


def status_of(sock: socket.socket, wait: float = 5.0) -> int | None:
    "The status code of the answer on `sock` (None when the connection closes without one or nothing comes in time)."
    sock.settimeout(wait)
    try: data = sock.recv(65536)
    except (socket.timeout, ConnectionResetError): return None
    return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None


def test_aborted_uploads_are_a_quiet_counter(exported):
    "B3: clients that send half a body and leave cost a counter, not a traceback each, and do not slow /health."
    body = json.dumps({"features": np.zeros((64, 5, 15)).tolist()}).encode()
    with server(exported["mlp"]["model"], "--api-key", KEY) as (url, proc):
        time.sleep(0.5)
        before, worst, n = len(proc.log()), 0.0, 200
        for i in range(n):
            with socket.create_connection(("127.0.0.1", proc.port)) as c:
                c.sendall(head(length=len(body)) + body[: len(body) // 2])
                time.sleep(0.002)
            if i % 20 == 0:
                t0 = time.perf_counter(); assert httpx.get(url + "/health", timeout=5).status_code == 200
                worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.5)
        text, log = httpx.get(url + "/metrics").text, proc.log()[before:]
        assert metric(text, "atf_client_disconnects_total") == n
        assert metric(text, "atf_requests_total", path="/predict", status="499") == n
        assert "Traceback" not in log and "ERROR" not in log and len(log) < 40 * n, log[-2000:]
        assert worst < 1.0


def test_slowloris_connections_are_closed_and_cannot_lock_out_others(exported):
    "B4: one-byte-at-a-time heads are cut at the header timeout; at the connection cap the idlest goes, so /health answers."
    with server(exported["mlp"]["model"], "--no-auth", "--header-timeout", "1.5", nofile=160) as (url, proc):
        slow, health = [], []
        for i in range(300):                                      # far more than the 160 files the server may open
            s = socket.create_connection(("127.0.0.1", proc.port), timeout=2); s.sendall(b"P"); slow.append(s)
            if i % 25 == 24: health.append(httpx.get(url + "/health", timeout=3).status_code)
        assert health == [200] * 12
        time.sleep(2.0)                                           # past the header timeout
        assert sum(not is_closed(s, 0.2) for s in slow) == 0
        text = httpx.get(url + "/metrics").text
        assert metric(text, "atf_connections_dropped_total", reason="evicted") > 0
        assert metric(text, "atf_connections_dropped_total", reason="header_timeout") > 0
        for s in slow: s.close()
        assert "max_connections lowered" in proc.log()              # the cap was fitted under the open-files limit


def test_slow_bodies_time_out_and_in_flight_is_bounded(exported):
    "B4: a body that stalls gets 408 and the connection closes; beyond max_in_flight requests get 503 at once."
    body = json.dumps({"features": np.zeros((8, 5, 15)).tolist()}).encode()
    with server(exported["mlp"]["model"], "--no-auth", "--body-timeout", "1", "--max-in-flight", "4") as (url, proc):
        socks = []
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", proc.port)); s.sendall(head(length=len(body), key=None) + body[:100])
            socks.append(s); time.sleep(0.05)
        t0 = time.time()
        got = [status_of(s) for s in socks]
        assert sorted(got) == [408] * 4 + [503] * 6 and time.time() - t0 < 4, got
        assert all(is_closed(s) for s in socks[:4])
        assert httpx.get(url + "/health").status_code == 200
        text = httpx.get(url + "/metrics").text
        assert metric(text, "atf_requests_total", path="/predict", status="408") == 4
        assert metric(text, "atf_requests_total", path="/predict", status="503") == 6


def test_oversized_heads_get_431(exported):
    "B4: a request head above max_header_bytes is refused before it reaches the app."
    with server(exported["mlp"]["model"], "--no-auth", "--max-header-bytes", "4096") as (url, proc):
        with socket.create_connection(("127.0.0.1", proc.port)) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 8000 + b"\r\n\r\n")
            assert status_of(s) == 431
        assert httpx.get(url + "/health", headers={"X-Small": "a" * 1000}).status_code == 200
        assert metric(httpx.get(url + "/metrics").text, "atf_connections_dropped_total", reason="header_too_large") == 1


@pytest.mark.parametrize("args, env, needle", [
    (["--api-key", ""], {}, "API key is empty"),
    ([], {"ATF_API_KEY": ""}, "API key is empty"),
    ([], {"ATF_API_KEY": "   "}, "API key is empty"),
    ([], {}, "no API key"),
    (["--no-auth"], {"ATF_API_KEY": "k"}, "choose one"),
])
def test_a_missing_or_empty_key_refuses_to_start(exported, args, env, needle):
    "B5: no silent fail-open: the process exits with status 2 and one line that says why."
    clean = {k: v for k, v in os.environ.items() if k != "ATF_API_KEY"}
    res = subprocess.run([*SERVE, str(exported["mlp"]["model"]), "--port", str(free_port()), *args],
                         env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_no_auth_is_explicit_logged_and_never_opens_admin(exported):
    "B5: --no-auth serves /predict without a key, says so at start, and still refuses /admin/*."
    X, _ = windows(exported["mlp"]["model"], 1)
    with server(exported["mlp"]["model"], "--no-auth") as (url, proc):
        assert httpx.post(url + "/predict", json={"features": X.tolist()}).status_code == 200
        r = httpx.post(url + "/admin/reload")
        assert r.status_code == 403 and "needs an API key" in r.json()["detail"]
        assert any("WARNING" in line and "WITHOUT an API key" in line for line in proc.log().splitlines())


def test_a_damaged_manifest_never_stops_the_service(exported, tmp_path):
    "B6: a manifest without a key, or [] (no format), is an unavailable model (503 with the reason) while the fallback serves."
    d = tmp_path / "m"; shutil.copytree(exported["mlp"]["model"], d)
    good = (d / "manifest.json").read_text()
    m = json.loads(good)
    for content, needle in (({k: v for k, v in m.items() if k != "window"}, "window: Field required"), ([], "format None, this atf reads")):
        (d / "manifest.json").write_text(json.dumps(content))
        with server(d, "--api-key", KEY, "--fallback", str(exported["lstm"]["model"])) as (url, proc):
            r = httpx.get(url + "/ready")
            assert r.status_code == 503 and needle in r.json()["reason"] and r.json()["fallback"] == "model"
            assert httpx.post(url + "/predict", json=bars_body(400), headers=H).json()["model"] == "fallback"
            assert proc.poll() is None
    (d / "manifest.json").write_text(good)
    with server(d, "--api-key", KEY, "--fallback", str(exported["lstm"]["model"])) as (url, proc):
        (d / "manifest.json").write_text("[]")
        r = httpx.post(url + "/admin/reload", headers=H)
        assert r.status_code == 200 and r.json()["ready"] is False and "format None" in r.json()["reason"]
        assert httpx.get(url + "/ready").status_code == 503
        assert httpx.post(url + "/predict", json=bars_body(400), headers=H).json()["model"] == "fallback"
        (d / "manifest.json").write_text(good)
        assert httpx.post(url + "/admin/reload", headers=H).json()["ready"] is True


def test_reloads_swap_models_atomically(exported, tmp_path):
    "B8: with a broken primary and a fallback, reloading every 0.2 s under load never leaves a gap answered flat."
    broken = tmp_path / "broken"; shutil.copytree(exported["mlp"]["model"], broken)
    (broken / "model.onnx").write_bytes(b"garbage")
    body = bars_body(400)
    with server(broken, "--api-key", KEY, "--fallback", str(exported["lstm"]["model"])) as (url, _):
        stop, reloads = threading.Event(), [0]
        def reloader():
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    assert c.post(url + "/admin/reload", headers=H).json()["ready"] is False
                    reloads[0] += 1; time.sleep(0.2)
        t = threading.Thread(target=reloader); t.start()
        who: dict = {}
        try:
            with httpx.Client(timeout=10) as c:
                t0 = time.time()
                # at least 8 s and 20 reloads (a loaded CI machine reloads more slowly), never more than 60 s
                while time.time() - t0 < 8 or (reloads[0] < 20 and time.time() - t0 < 60):
                    r = c.post(url + "/predict", json=body, headers=H)
                    k = r.json()["model"] if r.status_code == 200 else r.status_code
                    who[k] = who.get(k, 0) + 1
        finally:
            stop.set(); t.join(20)
        assert reloads[0] >= 20 and set(who) == {"fallback"}, (reloads, who)


def test_one_clients_out_of_range_input_does_not_open_the_breaker(exported):
    "B9: NaN/inf from inputs far outside training is that request's problem; the next client gets the primary."
    X, _ = windows(exported["mlp"]["model"], 1)
    with server(exported["mlp"]["model"], "--api-key", KEY, "--fallback", str(exported["lstm"]["model"])) as (url, _):
        r = httpx.post(url + "/predict", json={"features": [[[3e38] * 15] * 5]}, headers=H).json()
        assert r["model"] == "flat" and r["fallback_reason"].startswith("input:") and "not finite" in r["fallback_reason"]
        nxt = httpx.post(url + "/predict", json={"features": X.tolist()}, headers=H).json()
        assert nxt["model"] == "primary" and nxt["fallback_reason"] is None
        assert httpx.get(url + "/status", headers=H).json()["circuit"]["state"] == "closed"
        text = httpx.get(url + "/metrics").text
        assert metric(text, "atf_failovers_total", reason="input") == 1 and metric(text, "atf_circuit_open") == 0


def test_a_model_that_is_not_finite_even_on_training_medians_opens_the_breaker(exported):
    "B9, the other side: when the model itself answers NaN (its canary too), everyone goes to the fallback."
    from atf.serving.app import ServeConfig, Service, answer
    svc = Service(ServeConfig(model_dir=str(exported["mlp"]["model"]), no_auth=True))
    X, _ = windows(exported["mlp"]["model"], 2)
    models = svc.models
    who, _, _, reason = asyncio.run(answer(svc, models, X, None, None))
    assert who == "primary" and svc.breaker.state == "closed"
    class NaNSession:
        def run(self, names, feeds): return [np.full((len(feeds["features"]), 1), np.nan, np.float32) for _ in names]
    models.primary.session = NaNSession()                        # the model breaks after it was loaded
    who, out, _, reason = asyncio.run(answer(svc, models, X, None, None))
    assert who == "flat" and reason.startswith("error: NonFiniteOutput") and "training medians" in reason
    assert svc.breaker.state == "open" and np.isfinite(out["position"]).all()


def test_model_handles_are_freed_by_reference_counting(exported):
    "B11: a model handle holds no reference cycle, so dropping it frees its onnxruntime session without the collector."
    from atf.serving.handle import ModelHandle
    gc.disable()
    try:
        h = ModelHandle(exported["mlp"]["model"])
        session, handle = weakref.ref(h.session), weakref.ref(h)
        del h
        assert handle() is None and session() is None
    finally:
        gc.enable()


def test_memory_stays_flat_over_500_reloads(exported):
    "B11: 500 reloads with a fallback grow the process by less than 10 MB (it grew 23 MB, still rising, before)."
    with server(exported["mlp"]["model"], "--api-key", KEY, "--fallback", str(exported["lstm"]["model"])) as (url, proc):
        p = psutil.Process(proc.pid)
        with httpx.Client(timeout=30) as c:
            for _ in range(20): assert c.post(url + "/admin/reload", headers=H).json()["ready"]
            rss0 = p.memory_info().rss
            for _ in range(500): c.post(url + "/admin/reload", headers=H)
            grown = (p.memory_info().rss - rss0) / 1e6
            assert c.post(url + "/predict", json=bars_body(400), headers=H).json()["model"] == "primary"
    print(f"RSS growth over 500 reloads: {grown:.1f} MB")
    assert grown < 10, grown


def healthcheck_cmd() -> list[str]:
    "The Dockerfile's HEALTHCHECK command (exec form), run with this interpreter."
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if l.startswith("HEALTHCHECK"))
    cmd = json.loads(line[line.index("CMD") + 3:].strip())
    assert cmd[0] == "python3"
    return [sys.executable, *cmd[1:]]


def test_the_container_healthcheck_follows_host_and_port(exported):
    "B12: the HEALTHCHECK calls $HOST:$PORT (wildcards read as loopback), not a hard-coded 127.0.0.1, and no proxy."
    from atf.serving.cli import health_url
    assert health_url("127.0.0.2", 8000) == "http://127.0.0.2:8000/health"
    assert health_url("0.0.0.0", 8000) == "http://127.0.0.1:8000/health" and health_url("::", 80) == "http://[::1]:80/health"
    cmd = healthcheck_cmd()
    assert "atf.serving.cli" in " ".join(cmd) and "127.0.0.1" not in " ".join(cmd)
    with server(exported["mlp"]["model"], "--no-auth") as (url, proc):
        base = {**os.environ, "PORT": str(proc.port)}
        run = lambda **env: subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True, timeout=30)
        assert run(HOST="127.0.0.1").returncode == 0
        assert run(HOST="0.0.0.0", http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9").returncode == 0
        dead = run(HOST="127.0.0.1", PORT=str(free_port()))
        assert dead.returncode == 1 and "unhealthy" in dead.stderr


def test_atf_serve_is_the_serving_cli():
    "`atf serve` is atf.serving.cli's command (atf.cli adds it with add_serve_command): same options."
    atf = str(Path(sys.executable).parent / "atf")
    out = subprocess.run([atf, "serve", "--help"], capture_output=True, text=True, timeout=60).stdout
    for option in ("--no-auth", "--header-timeout", "--body-timeout", "--max-connections", "--max-in-flight"):
        assert option in out, option


def test_features_from_bars_are_computed_off_the_event_loop(exported, tmp_path, monkeypatch):
    "Found when measuring B8: bar requests computed features on the event loop, so a burst of them stalled /health for"
    " over 10 s. The request's features and the fallback's are computed in the service's atf-features threads."
    import atf.serving.app as app_module
    from fastapi.testclient import TestClient
    seen, real = [], app_module.features_from_bars
    def spy(frame, manifest):
        seen.append(threading.current_thread().name)
        return real(frame, manifest)
    monkeypatch.setattr(app_module, "features_from_bars", spy)
    cfg = app_module.ServeConfig(model_dir=str(tmp_path / "missing"), fallback_dir=str(exported["mlp"]["model"]), no_auth=True)
    with TestClient(app_module.create_app(cfg)) as client:
        r = client.post("/predict", json=bars_body(600))
    assert r.status_code == 200 and r.json()["model"] == "fallback", r.text
    assert len(seen) == 2 and all(name.startswith("atf-features") for name in seen), seen
