"""Serving speed: onnxruntime vs TorchScript behind the same FastAPI service, under an open-loop load on 127.0.0.1.

1. Per-call inference, in process: the exported serving graph, model.onnx in onnxruntime vs model.ts in TorchScript
   (the same graph: scaling, network and position rules), one row and 64 rows, 1 thread each, through
   `atf.serving.handle.ModelHandle` (its session and its feeds).
2. Over HTTP: `atf serve` (uvicorn, 1 worker, 1 inference thread, an API key, the default connection limits and
   timeouts) with --backend onnx and --backend torchscript; requests
   are sent at a fixed rate (open loop: a slow answer does not slow the sender) for batch 1 and batch 64; client-side
   latency p50/p95/p99, achieved requests/s and errors.
Goals on 2 cores: p99 <= 10 ms at 200 requests/s for batch 1, and onnxruntime at least as fast as TorchScript per row.

    python benchmarks/bench_serve.py [--model-dir reports/<run>/models/<key>] [--rate 200] [--seconds 10]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def per_call_us(fn, n: int) -> float:
    "Median microseconds per call over n calls (after 50 warm-up calls)."
    for _ in range(50): fn()
    t = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter(); fn(); t[i] = time.perf_counter() - t0
    return float(np.median(t) * 1e6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs a prepared request and reads the answer (a load generator must be
    much cheaper than the server it measures; a full client library costs milliseconds per request on 2 cores)."""
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        return cls(*await asyncio.open_connection(host, port))

    async def post(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = int(next(l.split(b":", 1)[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")))
        return status, await self.reader.readexactly(length)


KEY = "bench-key"


async def open_loop(host: str, port: int, body: bytes, rate: float, seconds: float, connections: int = 32) -> dict:
    "Send `rate` requests/s for `seconds`, each on its own schedule (open loop); latency per request, errors, rate."
    request = (f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nX-API-Key: {KEY}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections): pool.put_nowait(await Connection.open(host, port))
    n, lat, errors = int(rate * seconds), [], 0
    async def one(i: int, start: float):
        nonlocal errors
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        t0 = time.perf_counter()
        conn = await pool.get()                  # waiting for a free connection counts as latency
        try:
            status, answer = await conn.post(request)
            if status != 200 or b'"model":"primary"' not in answer: errors += 1
        except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration): errors += 1
        finally: pool.put_nowait(conn)
        lat.append(time.perf_counter() - t0)
    warm = int(rate)                                      # one second at the same rate, not measured
    start = time.perf_counter()
    await asyncio.gather(*(one(i, start) for i in range(warm)))
    lat.clear(); errors = 0
    gc.collect(); gc.disable()                            # the generator's own collector pauses would count as latency
    start = time.perf_counter()
    try: await asyncio.gather(*(one(i, start) for i in range(n)))
    finally: gc.enable()
    took = time.perf_counter() - start
    while not pool.empty(): pool.get_nowait().writer.close()
    q = np.percentile(np.array(lat) * 1e3, [50, 95, 99])
    return {"p50": q[0], "p95": q[1], "p99": q[2], "rps": n / took, "errors": errors, "n": n}


def make_model(workdir: Path) -> Path:
    "Export a small real model (configs/serve_smoke.yaml) into workdir."
    atf = str(Path(sys.executable).parent / "atf")
    subprocess.run([atf, "experiment", "configs/serve_smoke.yaml", "--output-dir", str(workdir), "--run-id", "bench", "-q"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([atf, "export", str(workdir / "bench")], check=True, stdout=subprocess.DEVNULL)
    return workdir / "bench" / "models" / "IBM_native"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", help="an exported model directory (default: export configs/serve_smoke.yaml)")
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second sent")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each load run")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    a = ap.parse_args()
    import httpx
    from atf.serving.handle import ModelHandle
    model = Path(a.model_dir) if a.model_dir else make_model(Path(tempfile.mkdtemp(prefix="atf-bench-serve-")))
    m = json.loads((model / "manifest.json").read_text())
    W, f = m["window"], len(m["features"]["names"])
    rng = np.random.default_rng(0)
    print(f"model {m['key']} ({m['model']}, window {W}, {f} features) from {model}")

    onnx, ts = ModelHandle(model, threads=1, backend="onnx"), ModelHandle(model, threads=1, backend="torchscript")
    print("\nper-call inference (median, 1 thread):")
    for b in a.batches:
        x = onnx.feeds(rng.normal(size=(b, W, f)).astype(np.float32))          # the features, and zero state if any
        t_onnx = per_call_us(lambda: onnx.session.run(None, x), 2000)
        t_ts = per_call_us(lambda: ts.session.run(None, x), 2000)
        print(f"  batch {b:3d}: onnxruntime {t_onnx:8.1f} us   torchscript {t_ts:8.1f} us   ratio {t_ts / t_onnx:5.1f}x")

    print(f"\nHTTP, open loop at {a.rate:.0f} requests/s for {a.seconds:.0f} s, uvicorn 1 worker on 127.0.0.1 "
          f"(server on core 0, load generator on the others when there are two or more):")
    failed = 0
    for backend in ("onnx", "torchscript"):
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "atf.serving.cli", str(model), "--port", str(port), "--api-key", KEY,
                                 "--backend", backend, "--threads", "1"],       # = `atf serve ...`
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        cores = os.cpu_count() or 1
        if hasattr(os, "sched_setaffinity") and cores >= 2:       # the load generator must not take the server's core
            os.sched_setaffinity(proc.pid, {0}); os.sched_setaffinity(0, set(range(1, cores)))
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(url + "/ready", timeout=1).status_code == 200: break
                except httpx.TransportError: pass
                time.sleep(0.1)
            for b in a.batches:
                payload = {"features": rng.normal(size=(b, W, f)).round(6).tolist()}     # state, if any: zeros
                httpx.post(url + "/admin/reload", headers={"X-API-Key": KEY}, timeout=30)   # fresh latency window on the server
                r = asyncio.run(open_loop("127.0.0.1", port, json.dumps(payload).encode(), a.rate, a.seconds))
                srv = httpx.get(url + "/status", headers={"X-API-Key": KEY}).json()["request_latency"]
                failed += r["errors"]
                print(f"  {backend:11s} batch {b:3d}: client p50 {r['p50']:6.2f}  p95 {r['p95']:6.2f}  p99 {r['p99']:6.2f} ms | "
                      f"server p50 {srv['p50_ms']:6.2f}  p99 {srv['p99_ms']:6.2f} ms | {r['rps']:6.1f} req/s  "
                      f"errors {r['errors']}/{r['n']}")
        finally:
            proc.terminate(); proc.wait(15)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
