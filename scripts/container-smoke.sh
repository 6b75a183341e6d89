#!/usr/bin/env bash
# Build the serving image with podman, run it on 127.0.0.1, check it, stop and remove it.
# Usage: [PORT=18765] scripts/container-smoke.sh [MODEL_DIR]   (default: export a fresh run of configs/serve_smoke.yaml)
# Checks: the container refuses to start without ATF_API_KEY; then scripts/deploy-smoke.sh (/ready, 401 without the
# key, a primary /predict answer, latency under LATENCY_BUDGET_MS); /model 401 without the key; uid 10001; no torch
# in the image; the HEALTHCHECK passes. The podman settings are scripts/podman-env.sh's and the build is
# scripts/build-image.sh (Debian packages installed as needed: podman, runc, debootstrap when Docker Hub is out of reach).
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/.venv/bin}
PORT=${PORT:-18765}
IMAGE=localhost/atf-serve:smoke
NAME=atf-serve-smoke-$$
log() { echo "container-smoke: $*"; }

scripts/ensure-system-deps.sh curl
# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh
cleanup() { podman rm -f "$NAME" >/dev/null 2>&1 || true; podman rmi "$IMAGE" >/dev/null 2>&1 || true; rm -rf "${ATF_PODMAN_DIR:-}"; }   # build layers stay cached
trap cleanup EXIT

# a model to serve
MODEL=${1:-}
if [ -z "$MODEL" ]; then
  run_id=serve-smoke-$(date -u +%Y%m%dT%H%M%SZ)
  "$BIN/atf" experiment configs/serve_smoke.yaml --run-id "$run_id" -q >/dev/null
  "$BIN/atf" export "reports/$run_id" >/dev/null
  MODEL=reports/$run_id/models/IBM_native
fi
test -f "$MODEL/manifest.json" || { echo "FAIL: $MODEL has no manifest.json" >&2; exit 1; }

MODEL_DIR=$MODEL TAG=$IMAGE scripts/build-image.sh 2>&1 >/dev/null | sed 's/^/container-smoke: /'
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")

# no key, no service: the container must refuse to start (fail closed on 0.0.0.0), with one line saying why
set +e
refusal=$(timeout 60 podman run --rm --network host -e HOST=127.0.0.1 -e PORT="$PORT" "$IMAGE" 2>&1 >/dev/null); rc=$?
set -e
{ [ "$rc" = 2 ] && echo "$refusal" | grep -q "no API key"; } || { echo "FAIL: without ATF_API_KEY the container gave rc $rc: $refusal" >&2; exit 1; }

# no systemd here for podman's healthcheck timers: the check is run by hand below
export ATF_API_KEY=smoke-key
podman run -d --name "$NAME" --network host --health-interval disable -e ATF_API_KEY -e HOST=127.0.0.1 \
  -e PORT="$PORT" "$IMAGE" >/dev/null 2>>"$ATF_PODMAN_LOG"
for _ in $(seq 60); do
  curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break; sleep 0.5
done
smoke=$(scripts/deploy-smoke.sh "http://127.0.0.1:$PORT" 2>&1) \
  || { podman logs "$NAME" >&2; cat "$ATF_PODMAN_LOG" >&2 2>/dev/null; echo "FAIL: $smoke" >&2; exit 1; }
log "${smoke#deploy-smoke: }"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/model")
[ "$code" = 401 ] || { echo "FAIL: /model without the API key answered $code" >&2; exit 1; }
answer=$(curl -fsS -X POST -H 'content-type: application/json' -H "X-API-Key: $ATF_API_KEY" \
  --data-binary @deploy/proxy/smoke-body.json "http://127.0.0.1:$PORT/predict")
[ "$(podman exec "$NAME" id -u)" = 10001 ] || { echo "FAIL: the service does not run as uid 10001" >&2; exit 1; }
if podman exec "$NAME" python3 -c "import torch" >/dev/null 2>&1; then echo "FAIL: torch is in the serving image" >&2; exit 1; fi
podman healthcheck run "$NAME" >/dev/null 2>>"$ATF_PODMAN_LOG" || { cat "$ATF_PODMAN_LOG" >&2; podman healthcheck run "$NAME" >&2; echo "FAIL: HEALTHCHECK" >&2; exit 1; }
podman stop -t 10 "$NAME" >/dev/null 2>>"$ATF_PODMAN_LOG"
log "OK: refuses to start without a key, /ready 200, /predict and /model 401 without key, a primary answer with it, uid 10001, no torch, HEALTHCHECK healthy; image $(( size / 1000000 )) MB"
log "answer: ${answer:0:400}"
