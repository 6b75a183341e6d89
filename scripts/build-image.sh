#!/usr/bin/env bash
# Build the serving image (Dockerfile) with podman; print its image ID (sha256:...) on stdout.
# Usage: [MODEL_DIR=reports/<run-id>/models/<key>] [TAG=localhost/atf-serve:dev] [BASE_IMAGE=...] \
#          scripts/build-image.sh [--label KEY=VALUE ...]
#   MODEL_DIR  an exported model (atf export) baked in at /model; unset or empty: none (deploy/model holds only its
#              README, so the service starts, stays unready and answers flat until a model is mounted at /model)
#   TAG        the image name to tag
#   --label    OCI labels to add (e.g. org.opencontainers.image.version=1.2.0); a different label, a different image ID
# The build context holds only what the image needs: the package, its packaging files and the model. Behind a
# TLS-intercepting proxy the host's CA bundle is mounted for the build only (PIP_CERT), never copied in.
# Shared by container-smoke.sh, deploy-test.sh and CI (podman settings: scripts/podman-env.sh).
set -euo pipefail
usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }
labels=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --label) if [ $# -lt 2 ] || [[ "$2" != *=* ]]; then echo "build-image: --label needs KEY=VALUE" >&2; exit 2; fi
             labels+=(--label "$2"); shift 2 ;;
    *) echo "build-image: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
TAG=${TAG:-localhost/atf-serve:dev}
MODEL_DIR=${MODEL_DIR:-}
if [ -n "$MODEL_DIR" ] && [ ! -f "$MODEL_DIR/manifest.json" ]; then
  echo "build-image: MODEL_DIR=$MODEL_DIR has no manifest.json (export a run with: atf export reports/<run-id>)" >&2; exit 1
fi
# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh
ctx=$(mktemp -d)
trap 'rm -rf "$ctx" "${ATF_PODMAN_DIR:-}"' EXIT
base=$(atf_base_image)

cp -r Dockerfile .dockerignore settings.ini setup.py pyproject.toml README.md requirements atf "$ctx"/
mkdir -p "$ctx/deploy"
if [ -n "$MODEL_DIR" ]; then cp -r "$MODEL_DIR" "$ctx/deploy/model"; else cp -r deploy/model "$ctx/deploy/model"; fi
find "$ctx/atf" -name __pycache__ -prune -exec rm -rf {} +
ca=/etc/ssl/certs/ca-certificates.crt
cert=(); [ -f "$ca" ] && cert=(-v "$ca:/run/host-ca/ca.crt:ro" --build-arg PIP_CERT=/run/host-ca/ca.crt)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=$(sed -n 's/^git_url *= *//p' settings.ini)
t0=$(date +%s)
podman build -q --format docker --network host --build-arg BASE_IMAGE="$base" "${cert[@]}" \
  --label org.opencontainers.image.revision="$revision" \
  --label org.opencontainers.image.source="$source_url" "${labels[@]}" \
  -t "$TAG" "$ctx" >/dev/null
id=$(podman image inspect --format '{{.Id}}' "$TAG")
size=$(podman image inspect --format '{{.Size}}' "$TAG")
echo "build-image: $TAG (${id:0:12}) on $base in $(( $(date +%s) - t0 )) s, $(( size / 1000000 )) MB, model: ${MODEL_DIR:-none}" >&2
echo "sha256:$id"
