#!/usr/bin/env bash
# Smoke-test a running atf service: readiness, auth, a primary answer, latency under budget.
# Usage: ATF_API_KEY=... scripts/deploy-smoke.sh [--body FILE] URL        e.g. http://127.0.0.1:8000
#   env ATF_API_KEY        the service's key (required)
#       SMOKE_BODY         the /predict body (JSON), also --body; default deploy/proxy/smoke-body.json (400 daily
#                          IBM bars from 2011, public domain, from bokeh_sampledata through atf.data.load_dataset)
#       SMOKE_N            authenticated predicts timed for the latency check (default 20)
#       LATENCY_BUDGET_MS  their p95 must stay under this (default 250)
#       LATENCY_MAX_MS     and their slowest under this (default 4 x the budget)
# Checks, in order: GET /ready answers 200 with "ready":true; POST /predict without the key -> 401; with the key
# -> 200 from the primary model ("model":"primary", no fallback); p95 and max of SMOKE_N predicts under budget.
# Needs only bash, curl, sort and awk (a deploy host has no atf venv). Exit 0 and one OK line, or exit 1 and one
# line naming the check that failed.
set -euo pipefail
usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }
here=$(cd "$(dirname "$0")" && pwd)
BODY=${SMOKE_BODY:-$here/../deploy/proxy/smoke-body.json}
URL=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --body) [ $# -ge 2 ] || { echo "deploy-smoke: --body needs a file" >&2; exit 2; }; BODY=$2; shift 2 ;;
    -*) echo "deploy-smoke: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) [ -z "$URL" ] || { echo "deploy-smoke: one URL only (see --help)" >&2; exit 2; }; URL=${1%/}; shift ;;
  esac
done
fail() { echo "deploy-smoke: FAIL $URL: $*" >&2; exit 1; }
[ -n "$URL" ] || { echo "deploy-smoke: no URL (usage: scripts/deploy-smoke.sh URL; see --help)" >&2; exit 2; }
[ -n "${ATF_API_KEY:-}" ] || { echo "deploy-smoke: ATF_API_KEY is not set" >&2; exit 2; }
[ -r "$BODY" ] || { echo "deploy-smoke: the request body $BODY cannot be read (SMOKE_BODY or --body)" >&2; exit 2; }
N=${SMOKE_N:-20}
BUDGET=${LATENCY_BUDGET_MS:-250}
MAX=${LATENCY_MAX_MS:-$(( BUDGET * 4 ))}
for v in N BUDGET MAX; do [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "deploy-smoke: $v=${!v} is not a positive integer" >&2; exit 2; }; done
command -v curl >/dev/null || { echo "deploy-smoke: curl is not installed" >&2; exit 2; }

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# the key goes to curl through a header file, never on a command line (ps would show it)
printf 'X-API-Key: %s\n' "$ATF_API_KEY" > "$tmp/key"
post() {  # post [key] -> prints "HTTP_CODE SECONDS", the answer in $tmp/answer
  local auth=(); [ "${1:-}" = key ] && auth=(-H "@$tmp/key")
  curl -sS -o "$tmp/answer" -w '%{http_code} %{time_total}\n' --max-time 30 -X POST \
    -H 'content-type: application/json' "${auth[@]}" --data-binary "@$BODY" "$URL/predict" 2>"$tmp/err" || true    # curl still prints 000 when nothing answered
}
short() { head -c 300 "$1" | tr '\n' ' '; }

code=$(curl -sS -o "$tmp/ready" -w '%{http_code}' --max-time 10 "$URL/ready" 2>"$tmp/err") || code=000
[ "$code" = 000 ] && fail "/ready: no answer ($(short "$tmp/err"))"
{ [ "$code" = 200 ] && grep -q '"ready":true' "$tmp/ready"; } || fail "/ready answered $code: $(short "$tmp/ready")"

read -r code _ < <(post)
[ "$code" = 401 ] || fail "/predict without the API key answered $code, not 401: $(short "$tmp/answer")"

read -r code _ < <(post key)
[ "$code" = 200 ] || fail "/predict with the API key answered $code: $(short "$tmp/answer") $(short "$tmp/err")"
grep -q '"model":"primary"' "$tmp/answer" || fail "/predict was not answered by the primary model: $(short "$tmp/answer")"
model_key=$(sed -n 's/.*"model_key":"\([^"]*\)".*/\1/p' "$tmp/answer")

: > "$tmp/times"
for _ in $(seq "$N"); do
  read -r code secs < <(post key)
  [ "$code" = 200 ] || fail "a timed /predict answered $code: $(short "$tmp/answer")"
  grep -q '"model":"primary"' "$tmp/answer" || fail "a timed /predict was not answered by the primary: $(short "$tmp/answer")"
  echo "$secs" >> "$tmp/times"
done
read -r p95 max < <(sort -g "$tmp/times" | awk '{t[NR] = $1 * 1000} END {i = int(0.95 * NR + 0.999999); if (i < 1) i = 1;
  printf "%.0f %.0f\n", t[i], t[NR]}')
[ "$p95" -le "$BUDGET" ] || fail "latency p95 ${p95} ms over the budget of ${BUDGET} ms (LATENCY_BUDGET_MS), $N predicts"
[ "$max" -le "$MAX" ] || fail "latency max ${max} ms over ${MAX} ms (LATENCY_MAX_MS), $N predicts"
echo "deploy-smoke: OK $URL: ready, 401 without key, primary answer (model_key $model_key), $N predicts p95 ${p95} ms max ${max} ms (budget ${BUDGET}/${MAX} ms)"
