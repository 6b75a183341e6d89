#!/usr/bin/env bash
# The blue/green deployment test (make test-deploy): real podman containers, a real nginx, a client that never stops.
# Usage: scripts/deploy-test.sh [--help]      env DEPLOY_TEST_PORT (default 18800; the colours use +1 and +2),
#        SMOKE_MODEL (an exported model to serve; default: export a fresh run of configs/serve_smoke.yaml)
# A shell script rather than pytest: it drives podman, nginx and scripts/deploy.sh as an operator would, cleans up
# in one trap, and prints a step log; `make test-py` (pytest -n 2) never starts containers twice or in parallel.
# Steps: check the committed smoke body is still what atf.data gives; export a run of configs/serve_smoke.yaml;
# build v1 (that model), a broken v2 (no model: never ready) and a good v2 (v1's model, another label, so another
# image ID); deploy v1; start clients sending authenticated /predict through the proxy (one keep-alive connection,
# one new connection per request); deploy the broken v2 (must fail, v1 still serving); deploy the good v2 with a
# 1 ms latency budget (its smoke test must fail, v1 still serving); deploy the good v2 (must switch); roll back
# (v1 again); stop the clients: 0 failed requests, at least 100 made, each client saw v1 -> v2 -> v1. The keep-alive
# client resends a request once when the proxy closed its idle connection under it (RFC 9112 9.3.1; counted).
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;; "") ;; *) echo "deploy-test: no arguments (see --help)" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/.venv/bin}
ENV=deploytest
PORT=${DEPLOY_TEST_PORT:-18800}
t0=$(date +%s)
log() { echo "deploy-test: [$(( $(date +%s) - t0 ))s] $*"; }
fail() { echo "deploy-test: FAIL: $*" >&2; exit 1; }

# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh
work=$(mktemp -d); chmod 755 "$work"
export DEPLOY_ROOT=$work/state PORT ATF_API_KEY
ATF_API_KEY=deploy-test-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
export READY_TIMEOUT_S=${READY_TIMEOUT_S:-15} LATENCY_BUDGET_MS=${LATENCY_BUDGET_MS:-250}
images=(localhost/atf-serve:deploy-test-v1 localhost/atf-serve:deploy-test-v2-broken localhost/atf-serve:deploy-test-v2)
client_pid=""
cleanup() {
  local rc=$?
  set +e                                  # every step below runs, whatever fails
  if [ -n "$client_pid" ]; then kill "$client_pid" 2>/dev/null || true; fi
  scripts/deploy.sh --stop "$ENV" >/dev/null 2>&1 || true
  pid=$(cat "$DEPLOY_ROOT/nginx/nginx.pid" 2>/dev/null || true)           # in case --stop could not stop it
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid" || true; fi
  podman rm -f -t 5 "atf-$ENV-blue" "atf-$ENV-green" >/dev/null 2>&1 || true
  podman rmi "${images[@]}" >/dev/null 2>&1 || true
  [ "$rc" = 0 ] || { echo "--- deploy history"; cat "$DEPLOY_ROOT/history.log" 2>/dev/null; echo "--- nginx errors";
                     tail -5 "$DEPLOY_ROOT/nginx/logs/error.log" 2>/dev/null; } >&2
  rm -rf "$work" "${ATF_PODMAN_DIR:-}" "${run_id:+reports/$run_id}"
  exit "$rc"
}
trap cleanup EXIT

# the committed smoke body is the one container-smoke.sh always built (regenerate with the same code if this fails)
"$BIN/python" - <<'PY' || fail "deploy/proxy/smoke-body.json differs from atf.data's IBM bars: regenerate it"
import json
from atf.data import load_dataset
df = load_dataset("us_stocks", "IBM").loc["2011-01-01":].iloc[:400]
want = {"bars": [{"time": str(t), **{k: float(r[k]) for k in ("open", "high", "low", "close", "volume")}} for t, r in df.iterrows()]}
assert json.load(open("deploy/proxy/smoke-body.json")) == want
PY

if [ -n "${SMOKE_MODEL:-}" ]; then                  # an exported model given (make test-deploy: scripts/smoke-model.sh)
  model=$SMOKE_MODEL
  [ -f "$model/manifest.json" ] || fail "SMOKE_MODEL=$model has no manifest.json"
  log "model: $model"
else
  run_id=deploy-test-$(date -u +%Y%m%dT%H%M%SZ)
  "$BIN/atf" experiment configs/serve_smoke.yaml --run-id "$run_id" -q >/dev/null
  "$BIN/atf" export "reports/$run_id" >/dev/null
  model=reports/$run_id/models/IBM_native
  log "model: exported $model"
fi

v1=$(MODEL_DIR=$model TAG=${images[0]} scripts/build-image.sh --label org.opencontainers.image.version=deploy-test-v1)
bad=$(TAG=${images[1]} scripts/build-image.sh --label org.opencontainers.image.version=deploy-test-v2-broken)
v2=$(MODEL_DIR=$model TAG=${images[2]} scripts/build-image.sh --label org.opencontainers.image.version=deploy-test-v2)
{ [ "$v1" != "$v2" ] && [ "$v1" != "$bad" ] && [ "$v2" != "$bad" ]; } || fail "the three images share an ID: $v1 $bad $v2"
log "images: v1 ${v1:7:12}, broken v2 ${bad:7:12}, good v2 ${v2:7:12}"

serving() { curl -s -o /dev/null -D - --max-time 5 "http://127.0.0.1:$PORT/health" | tr -d '\r' | sed -n 's/^x-atf-image: //Ip'; }
state_id() { sed -n 's/^id=//p' "$DEPLOY_ROOT/$1"; }
deploy() {  # deploy ARGS... -> rc in $rc, the last line in $last
  set +e; scripts/deploy.sh "$@" > "$work/out" 2>&1; rc=$?; set -e
  last=$(tail -1 "$work/out")
}

# 1. v1
deploy "$ENV" "${images[0]}"
[ "$rc" = 0 ] || { cat "$work/out" >&2; fail "deploying v1 exited $rc"; }
[ "$(serving)" = "${v1:7:12}" ] || fail "after deploying v1 the proxy answers from '$(serving)'"
log "deploy v1 -> rc 0, serving ${v1:7:12}: $last"

# clients through the proxy for the rest of the test
cat > "$work/client.py" <<'PY'
"""Authenticated /predict through the proxy until the stop file appears; a JSON summary at the end."""
import json, os, sys, threading, time
import httpx
url, body, stop, out = sys.argv[1:5]
key = os.environ["ATF_API_KEY"]
payload = open(body, "rb").read()
headers = {"content-type": "application/json", "x-api-key": key}
lock = threading.Lock()
res = {"ok": 0, "failed": 0, "resent": 0, "failures": [], "by_image": {}, "sequence": {}}   # sequence: per thread

def one(client, reused=False):
    try:
        try:
            r = client.post(url, content=payload, headers=headers)
        except httpx.RemoteProtocolError:
            # HTTP/1.1 (RFC 9112 9.3.1): a server may close an idle kept-alive connection at any moment (nginx's old
            # workers do on reload), racing a request just sent on it. A client resends such a request once on a new
            # connection, as Go's and urllib3's clients do; counted apart. A fresh connection gets no second try.
            if not reused: raise
            with lock: res["resent"] += 1
            r = client.post(url, content=payload, headers=headers)
        img = r.headers.get("x-atf-image", "?")
        good = r.status_code == 200 and r.json().get("model") == "primary"
        why = None if good else f"{r.status_code} {r.text[:150]}"
    except httpx.HTTPError as e:
        img, good, why = "?", False, f"{type(e).__name__}: {e}"
    with lock:
        if good:
            res["ok"] += 1; res["by_image"][img] = res["by_image"].get(img, 0) + 1
            seq = res["sequence"].setdefault(threading.current_thread().name, [])
            if not seq or seq[-1] != img: seq.append(img)
        else:
            res["failed"] += 1; res["failures"].append(f"{time.strftime('%H:%M:%S')} {threading.current_thread().name} {why}")
        if (res["ok"] + res["failed"]) % 10 == 0: open(out + ".progress", "w").write(str(res["ok"]))

def keep_alive():                       # one pooled connection, reused across the switches
    with httpx.Client(timeout=30) as c:
        while not os.path.exists(stop): one(c, reused=True); time.sleep(0.02)

def fresh():                            # a new connection for every request
    while not os.path.exists(stop):
        with httpx.Client(timeout=30) as c: one(c)
        time.sleep(0.02)

threads = [threading.Thread(target=f, name=f.__name__) for f in (keep_alive, fresh)]
for t in threads: t.start()
for t in threads: t.join()
json.dump(res, open(out, "w"))
PY
"$BIN/python" "$work/client.py" "http://127.0.0.1:$PORT/predict" deploy/proxy/smoke-body.json \
  "$work/stop" "$work/client.json" > "$work/client.log" 2>&1 &
client_pid=$!
for _ in $(seq 100); do [ -s "$work/client.json.progress" ] && break; sleep 0.2; done
[ -s "$work/client.json.progress" ] || { cat "$work/client.log" >&2; fail "the client made no request"; }
log "client: sending authenticated /predict through 127.0.0.1:$PORT (keep-alive and new-connection threads)"

# 2. broken v2: must fail, v1 keeps serving, the broken container is gone
deploy "$ENV" "${images[1]}"
[ "$rc" != 0 ] || fail "deploying the broken v2 exited 0"
[ "$(serving)" = "${v1:7:12}" ] || fail "after the failed deploy the proxy answers from '$(serving)', not v1"
[ "$(state_id current)" = "$v1" ] || fail "after the failed deploy the recorded current image is not v1"
! podman container exists "atf-$ENV-green" || fail "the broken container atf-$ENV-green was left behind"
{ [ "$(wc -l < "$work/out")" -le 2 ] && echo "$last" | grep -q "not ready"; } || { cat "$work/out" >&2; fail "the failed deploy did not say why in one line"; }
log "deploy broken v2 -> rc $rc, still serving ${v1:7:12}: $last"

# 2b. good v2 with an impossible latency budget: the smoke test fails, v1 keeps serving
LATENCY_BUDGET_MS=1 deploy "$ENV" "${images[2]}"
[ "$rc" != 0 ] || fail "a deploy whose smoke test fails exited 0"
[ "$(serving)" = "${v1:7:12}" ] || fail "after the failed smoke test the proxy answers from '$(serving)', not v1"
! podman container exists "atf-$ENV-green" || fail "atf-$ENV-green was left behind after its smoke test failed"
echo "$last" | grep -q "smoke test .* failed: .*latency" || { cat "$work/out" >&2; fail "the failed smoke test did not say why"; }
log "deploy v2 with LATENCY_BUDGET_MS=1 -> rc $rc, still serving ${v1:7:12}: $last"

# 3. good v2: switched, the old colour stopped
deploy "$ENV" "${images[2]}"
[ "$rc" = 0 ] || { cat "$work/out" >&2; fail "deploying the good v2 exited $rc"; }
[ "$(serving)" = "${v2:7:12}" ] || fail "after deploying v2 the proxy answers from '$(serving)'"
{ [ "$(state_id current)" = "$v2" ] && [ "$(state_id previous)" = "$v1" ]; } || fail "the state does not record v2 current, v1 previous"
! podman container exists "atf-$ENV-blue" || fail "the old container atf-$ENV-blue still exists after the switch"
log "deploy good v2 -> rc 0, serving ${v2:7:12}: $last"
sleep 2

# 4. rollback: v1 again
deploy --rollback "$ENV"
[ "$rc" = 0 ] || { cat "$work/out" >&2; fail "the rollback exited $rc"; }
[ "$(serving)" = "${v1:7:12}" ] || fail "after the rollback the proxy answers from '$(serving)'"
{ [ "$(state_id current)" = "$v1" ] && [ "$(state_id previous)" = "$v2" ]; } || fail "the state does not record v1 current, v2 previous"
log "rollback -> rc 0, serving ${v1:7:12}: $last"
sleep 2

# 5. the clients' view
touch "$work/stop"; wait "$client_pid" || true; client_pid=""
[ -s "$work/client.json" ] || { cat "$work/client.log" >&2; fail "the client wrote no summary"; }
"$BIN/python" - "$work/client.json" "${v1:7:12}" "${v2:7:12}" <<'PY' || fail "the clients' requests (above)"
import json, sys
r, v1, v2 = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
seqs = "; ".join(f"{k}: {' -> '.join(v)}" for k, v in r["sequence"].items())
print(f"deploy-test: client: {r['ok']} ok, {r['failed']} failed, {r['resent']} resent after an idle keep-alive close; answers by image {r['by_image']}; {seqs}")
for f in r["failures"][:10]: print("  failed:", f)
assert r["failed"] == 0, "failed requests"
assert r["resent"] <= 3, "more resends than switches: the proxy closes connections it should keep"
assert r["ok"] >= 100, "fewer than 100 requests"
assert all(v == [v1, v2, v1] for v in r["sequence"].values()) and len(r["sequence"]) == 2, "a client did not see v1 -> v2 -> v1"
PY
log "OK: v1 deployed, broken v2 refused with v1 serving, v2 switched in, rolled back to v1; 0 failed client requests"
echo "--- $DEPLOY_ROOT/history.log"; sed "s|$DEPLOY_ROOT|DEPLOY_ROOT|g" "$DEPLOY_ROOT/history.log"
