#!/usr/bin/env bash
# Build the serving image with podman, run it on 127.0.0.1, check /ready and a /predict answer, stop and remove it.
# Usage: scripts/container-smoke.sh [MODEL_DIR]   (default: export a fresh run of configs/serve_smoke.yaml)
# Installs what it needs with apt-get (podman, runc, debootstrap). No Docker Hub here: the base image is
# python:3.11-slim when it can be pulled, else a Debian bookworm minbase with Python 3.11 built by debootstrap.
set -euo pipefail
BIN=${BIN:-$PWD/.venv/bin}
PORT=${PORT:-18765}
IMAGE=localhost/atf-serve:smoke
NAME=atf-serve-smoke-$$
BASE=${BASE_IMAGE:-}
log() { echo "container-smoke: $*"; }

scripts/ensure-system-deps.sh podman runc debootstrap uidmap curl

# podman settings this machine needs (hybrid cgroups, no crun, fixed open-files limit), outside /etc
conf_dir=$(mktemp -d); trap 'rm -rf "$conf_dir"' EXIT
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
cat > "$conf_dir/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$conf_dir/containers.conf"
plog="$conf_dir/podman.log"      # podman's notices about systemd timers (absent here) go here, shown on failure
cleanup() { podman rm -f "$NAME" >/dev/null 2>&1 || true; rm -rf "$conf_dir" "${ctx:-}"; }
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

# the base image
if [ -z "$BASE" ]; then
  if podman image exists docker.io/library/python:3.11-slim || podman pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
    BASE=docker.io/library/python:3.11-slim
  else
    BASE=localhost/python-base:3.11
    if ! podman image exists "$BASE"; then
      log "Docker Hub unreachable: building $BASE with debootstrap (Debian bookworm, Python 3.11)"
      rootfs=$(mktemp -d)
      mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 || true)   # apt's own mirror
      debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$rootfs" \
        ${mirror:+"$mirror"} >/dev/null
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      tar -C "$rootfs" -c . | podman import -q - "$BASE" >/dev/null
      rm -rf "$rootfs"
    fi
  fi
fi

# a small build context: the package, its packaging files and the model
ctx=$(mktemp -d)
cp -r Dockerfile .dockerignore settings.ini setup.py pyproject.toml README.md requirements atf deploy "$ctx"/
rm -rf "$ctx/deploy/model" && cp -r "$MODEL" "$ctx/deploy/model"
find "$ctx/atf" -name __pycache__ -prune -exec rm -rf {} +
ca=/etc/ssl/certs/ca-certificates.crt
t0=$(date +%s)
podman build -q --format docker --build-arg BASE_IMAGE="$BASE" --network host \
  $( [ -f "$ca" ] && echo "-v $ca:/run/host-ca/ca.crt:ro --build-arg PIP_CERT=/run/host-ca/ca.crt" ) \
  -t "$IMAGE" "$ctx" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE on $BASE in $(( $(date +%s) - t0 )) s, $(( size / 1000000 )) MB"

# no key, no service: the container must refuse to start (fail closed on 0.0.0.0), with one line saying why
set +e
refusal=$(timeout 60 podman run --rm --network host -e HOST=127.0.0.1 -e PORT="$PORT" "$IMAGE" 2>&1 >/dev/null); rc=$?
set -e
[ "$rc" = 2 ] && echo "$refusal" | grep -q "no API key" || { echo "FAIL: without ATF_API_KEY the container gave rc $rc: $refusal" >&2; exit 1; }

# no systemd here for podman's healthcheck timers: the check is run by hand below
podman run -d --name "$NAME" --network host --health-interval disable -e ATF_API_KEY=smoke-key -e HOST=127.0.0.1 \
  -e PORT="$PORT" "$IMAGE" >/dev/null 2>>"$plog"
for _ in $(seq 60); do
  curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break; sleep 0.5
done
curl -fsS "http://127.0.0.1:$PORT/ready" | grep -q '"ready":true' || { podman logs "$NAME" >&2; cat "$plog" >&2; echo "FAIL: /ready" >&2; exit 1; }
body=$("$BIN/python" - <<'PY'
import json
from atf.data import load_dataset
df = load_dataset("us_stocks", "IBM").loc["2011-01-01":].iloc[:400]
print(json.dumps({"bars": [{"time": str(t), **{k: float(r[k]) for k in ("open", "high", "low", "close", "volume")}}
                           for t, r in df.iterrows()]}))
PY
)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$PORT/predict")
[ "$code" = 401 ] || { echo "FAIL: /predict without the API key answered $code" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/model")
[ "$code" = 401 ] || { echo "FAIL: /model without the API key answered $code" >&2; exit 1; }
answer=$(curl -fsS -X POST -H 'content-type: application/json' -H 'X-API-Key: smoke-key' -d "$body" "http://127.0.0.1:$PORT/predict")
echo "$answer" | grep -q '"model":"primary"' || { echo "FAIL: /predict answered $answer" >&2; exit 1; }
[ "$(podman exec "$NAME" id -u)" = 10001 ] || { echo "FAIL: the service does not run as uid 10001" >&2; exit 1; }
if podman exec "$NAME" python3 -c "import torch" >/dev/null 2>&1; then echo "FAIL: torch is in the serving image" >&2; exit 1; fi
podman healthcheck run "$NAME" >/dev/null 2>>"$plog" || { cat "$plog" >&2; podman healthcheck run "$NAME" >&2; echo "FAIL: HEALTHCHECK" >&2; exit 1; }
podman stop -t 10 "$NAME" >/dev/null 2>>"$plog"
log "OK: refuses to start without a key, /ready 200, /predict and /model 401 without key, a primary answer with it, uid 10001, no torch, HEALTHCHECK healthy; image $(( size / 1000000 )) MB"
log "answer: $answer"
