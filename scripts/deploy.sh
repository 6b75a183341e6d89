#!/usr/bin/env bash
# Blue/green deployment of the atf serving image on one host, with podman and an nginx proxy.
# Usage: scripts/deploy.sh ENV IMAGE        deploy IMAGE (a tag, name@sha256:... or image ID) to ENV
#        scripts/deploy.sh --rollback ENV   deploy the previous image of ENV again (the same steps)
#        scripts/deploy.sh --status ENV     the current and previous deployment of ENV
#        scripts/deploy.sh --stop ENV       stop ENV's proxy and containers (the state stays)
# Environment:
#   ATF_API_KEY      the service's key (required to deploy; passed to the container through the environment)
#   PORT             ENV's public port, on 127.0.0.1 (LISTEN_ADDR); required on a first deploy, then remembered
#   BLUE_PORT, GREEN_PORT   the colours' own loopback ports (default PORT+1, PORT+2)
#   MODEL_DIR        an exported model mounted read-only at /model (optional when the image bakes one in);
#                    remembered per deployment, so a rollback mounts the model its image ran with
#   DEPLOY_ROOT      state dir: current/previous deployment, history.log, nginx/ (default /var/lib/atf-deploy/ENV as
#                    root, else ${XDG_STATE_HOME:-~/.local/state}/atf-deploy/ENV)
#   READY_TIMEOUT_S  how long the new container has to report ready (default 60)
#   LATENCY_BUDGET_MS, SMOKE_N, SMOKE_BODY   passed on to scripts/deploy-smoke.sh
#
# Steps: start IMAGE as the idle colour (atf-ENV-blue or atf-ENV-green, --network host, HOST=127.0.0.1, its own
# port) beside the serving one; wait for /ready; run deploy-smoke.sh against it; switch the proxy to it; check the
# proxy answers from it; wait for the old proxy workers to finish; stop the old container; record the deployment.
# On any failure before the switch is confirmed the new container is removed (its log kept in DEPLOY_ROOT), the
# old one keeps serving, and the script exits 1 with one line saying why.
#
# Why nginx: traffic must move without a refused or dropped request. A port swap cannot do that (there is a moment
# when nothing listens on the public port, and podman cannot re-publish a running container's port). nginx is in
# Debian's archive, runs as a plain host process with its own prefix and config in DEPLOY_ROOT/nginx (no /etc, no
# systemd unit), and `nginx -s reload` is graceful: the listening socket stays open, new workers take new
# connections, old workers finish their in-flight requests and exit. HAProxy could do the same; nginx is the more
# common operator tool and needs no socket-transfer setup for a seamless reload.
set -euo pipefail
usage() { sed -n '2,28s/^# \{0,1\}//p' "$0"; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

mode=deploy
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --rollback|--status|--stop) mode=${1#--}; [ $# -eq 2 ] || { echo "deploy: usage: scripts/deploy.sh $1 ENV" >&2; exit 2; }; ENV=$2 ;;
  -*) echo "deploy: unknown option '$1' (see --help)" >&2; exit 2 ;;
  *) [ $# -eq 2 ] || { echo "deploy: usage: scripts/deploy.sh ENV IMAGE (see --help)" >&2; exit 2; }; ENV=$1; IMAGE=$2 ;;
esac
[[ "$ENV" =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] || { echo "deploy: ENV '$ENV' must be lower-case letters, digits and dashes" >&2; exit 2; }
state_home=/var/lib; [ "$(id -u)" -eq 0 ] || state_home=${XDG_STATE_HOME:-$HOME/.local/state}
DEPLOY_ROOT=${DEPLOY_ROOT:-$state_home/atf-deploy/$ENV}
[[ "$DEPLOY_ROOT" =~ ^/[A-Za-z0-9._/-]+$ ]] || { echo "deploy: DEPLOY_ROOT '$DEPLOY_ROOT' must be an absolute path of letters, digits, . _ / -" >&2; exit 2; }
NGX=$DEPLOY_ROOT/nginx
CURRENT=$DEPLOY_ROOT/current
PREVIOUS=$DEPLOY_ROOT/previous
mkdir -p "$DEPLOY_ROOT" "$NGX/logs" "$NGX/tmp"
chmod 755 "$NGX" "$NGX/tmp"

say() { echo "deploy: $ENV: $*" >&2; }
record() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*" >> "$DEPLOY_ROOT/history.log"; }
field() { [ -f "$1" ] && sed -n "s/^$2=//p" "$1" | head -1; true; }     # field FILE KEY
nginx_cmd() { nginx -p "$NGX/" -e "$NGX/logs/error.log" "$@" 9>&-; }     # 9: the lock, not for the daemon
nginx_pid() { local p; p=$(cat "$NGX/nginx.pid" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"; true; }
live_colour() { [ -n "$(nginx_pid)" ] && sed -n 's/^# atf-deploy: .* colour=\([a-z]*\) .*/\1/p' "$NGX/nginx.conf" 2>/dev/null; true; }

# one deploy per ENV at a time
exec 9>"$DEPLOY_ROOT/lock"
flock -n 9 || { echo "deploy: $ENV: another deploy.sh holds $DEPLOY_ROOT/lock" >&2; exit 1; }

if [ "$mode" = status ]; then
  for f in current previous; do
    if [ -f "$DEPLOY_ROOT/$f" ]; then echo "$f: $(tr '\n' ' ' < "$DEPLOY_ROOT/$f")"; else echo "$f: none"; fi
  done
  echo "proxy: $( [ -n "$(nginx_pid)" ] && echo "serving colour $(live_colour) on $(field "$DEPLOY_ROOT/port" port)" || echo stopped)"
  exit 0
fi

"$here/ensure-system-deps.sh" nginx curl
# shellcheck source=scripts/podman-env.sh
source "$here/podman-env.sh"
new=""; switched=""; done_ok=""; old_conf=""
cleanup() {
  local rc=$?
  set +e                                  # every step below runs, whatever fails
  if [ -z "$done_ok" ] && [ -n "$new" ]; then
    if [ -n "$switched" ] && [ -n "$old_conf" ]; then           # the proxy moved but the check failed: move it back
      cp "$old_conf" "$NGX/nginx.conf" || true
      nginx_cmd -c "$NGX/nginx.conf" -s reload 2>>"$NGX/logs/deploy.log" || true
    elif [ -n "$switched" ] && [ -n "$(nginx_pid)" ]; then      # a first deploy: nothing to move back to
      nginx_cmd -c "$NGX/nginx.conf" -s quit 2>>"$NGX/logs/deploy.log" || true
    fi
    podman logs "$new" > "$DEPLOY_ROOT/failed-$new-$(date -u +%Y%m%dT%H%M%SZ).log" 2>&1 || true
    podman rm -f -t 10 "$new" >/dev/null 2>>"$ATF_PODMAN_LOG" || true
  fi
  rm -rf "${ATF_PODMAN_DIR:-}" "${tmp:-}"
  exit "$rc"
}
trap cleanup EXIT
die() { say "FAIL: $*"; record "$mode failed: $*"; exit 1; }
tmp=$(mktemp -d)

if [ "$mode" = stop ]; then
  pid=$(nginx_pid)
  if [ -n "$pid" ]; then
    nginx_cmd -c "$NGX/nginx.conf" -s quit
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  for c in blue green; do podman rm -f -t 10 "atf-$ENV-$c" >/dev/null 2>>"$ATF_PODMAN_LOG" || true; done
  record "stopped"; say "proxy and containers stopped (state kept in $DEPLOY_ROOT)"
  exit 0
fi

[ "$mode" != rollback ] || [ -f "$PREVIOUS" ] || die "no previous deployment to roll back to (see $DEPLOY_ROOT/history.log)"
# the public port: given, or remembered from the first deploy
PORT=${PORT:-$(field "$DEPLOY_ROOT/port" port)}
[[ "$PORT" =~ ^[0-9]+$ ]] || die "no public PORT for $ENV: set PORT on its first deploy"
echo "port=$PORT" > "$DEPLOY_ROOT/port"
BLUE_PORT=${BLUE_PORT:-$(( PORT + 1 ))}
GREEN_PORT=${GREEN_PORT:-$(( PORT + 2 ))}
LISTEN_ADDR=${LISTEN_ADDR:-127.0.0.1}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-60}
[ -n "${ATF_API_KEY:-}" ] || die "ATF_API_KEY is not set"

if [ "$mode" = rollback ]; then
  IMAGE=$(field "$PREVIOUS" id)
  MODEL_DIR=$(field "$PREVIOUS" model_dir)
  podman image exists "$IMAGE" || IMAGE=$(field "$PREVIOUS" repo_digest)       # pruned: pull it by digest
fi
ref=${IMAGE}; [ "$mode" = rollback ] && ref=$(field "$PREVIOUS" image)            # the name it was deployed as
MODEL_DIR=${MODEL_DIR:-}
if [ -n "$MODEL_DIR" ]; then
  abs=$(cd "$MODEL_DIR" 2>/dev/null && pwd) || die "MODEL_DIR $MODEL_DIR is not a directory"
  MODEL_DIR=$abs
  [ -f "$MODEL_DIR/manifest.json" ] || die "MODEL_DIR $MODEL_DIR has no manifest.json"
fi
[ -n "$IMAGE" ] || die "no image to deploy"
podman image exists "$IMAGE" || podman pull -q "$IMAGE" >/dev/null 2>>"$ATF_PODMAN_LOG" || die "cannot pull $IMAGE"
id=sha256:$(podman image inspect --format '{{.Id}}' "$IMAGE")
digest=$(podman image inspect --format '{{.Digest}}' "$IMAGE")
repo_digest=$(podman image inspect --format '{{range .RepoDigests}}{{.}} {{end}}' "$IMAGE" | cut -d' ' -f1)

# the colours: the one the proxy serves now (none on a first deploy) and the idle one
old=$(live_colour)
case "$old" in blue) colour=green ;; *) colour=blue ;; esac
cport=$BLUE_PORT; [ "$colour" = green ] && cport=$GREEN_PORT
new=atf-$ENV-$colour
say "$mode ${ref} (${id:7:12}) as $colour on 127.0.0.1:$cport; serving now: ${old:-nothing}"
podman rm -f -t 10 "$new" >/dev/null 2>>"$ATF_PODMAN_LOG" || true         # a leftover of an interrupted deploy
if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$cport/"; then
  new=""; die "port $cport ($colour) is already in use by another process"
fi
mount=(); [ -n "$MODEL_DIR" ] && mount=(-v "$MODEL_DIR:/model:ro")
podman run -d --name "$new" --network host --health-interval disable \
  --label atf.deploy.env="$ENV" --label atf.deploy.colour="$colour" \
  -e ATF_API_KEY -e HOST=127.0.0.1 -e PORT="$cport" "${mount[@]}" "$id" >/dev/null 2>>"$ATF_PODMAN_LOG" 9>&- \
  || die "podman could not start $new from $ref: $(tail -1 "$ATF_PODMAN_LOG")"

# ready?
deadline=$(( $(date +%s) + READY_TIMEOUT_S ))
while :; do
  code=$(curl -s -o "$tmp/ready" -w '%{http_code}' --max-time 2 "http://127.0.0.1:$cport/ready" || true)
  [ "$code" = 200 ] && break
  state=$(podman container inspect --format '{{.State.Status}}' "$new" 2>/dev/null || echo gone)
  [ "$state" = running ] || die "$new stopped ($state) before it was ready: $(podman logs --tail 1 "$new" 2>&1 | tr -d '\r')"
  [ "$(date +%s)" -lt "$deadline" ] || die "$new was not ready within ${READY_TIMEOUT_S} s: /ready answered ${code}: $(head -c 300 "$tmp/ready")"
  sleep 0.5
done
smoke=$("$here/deploy-smoke.sh" "http://127.0.0.1:$cport" 2>&1) || die "smoke test of $new failed: $(echo "${smoke:-(no output)}" | tail -1)"
say "$smoke"

# switch: render the proxy config, check it, reload (or start) nginx
sed -e "s|@PREFIX@|$NGX|g" -e "s|@LISTEN@|$LISTEN_ADDR:$PORT|g" -e "s|@UPSTREAM@|127.0.0.1:$cport|g" \
    -e "s|@COLOUR@|$colour|g" -e "s|@IMAGE@|${id:7:12}|g" -e "s|@ENV@|$ENV|g" \
    "$root/deploy/proxy/nginx.conf.template" > "$NGX/nginx.conf.new"
nginx_cmd -t -q -c "$NGX/nginx.conf.new" 2>"$tmp/nginx-t" || die "nginx rejects the new config: $(grep -m1 emerg "$tmp/nginx-t" || tail -1 "$tmp/nginx-t")"
pid=$(nginx_pid)
if [ -f "$NGX/nginx.conf" ]; then old_conf=$tmp/nginx.conf.old; cp "$NGX/nginx.conf" "$old_conf"; fi
mv "$NGX/nginx.conf.new" "$NGX/nginx.conf"
switched=yes
if [ -n "$pid" ]; then
  nginx_cmd -c "$NGX/nginx.conf" -s reload 2>"$tmp/nginx-s" || die "nginx -s reload failed: $(tail -1 "$tmp/nginx-s")"
else
  nginx_cmd -c "$NGX/nginx.conf" 2>"$tmp/nginx-s" || die "nginx did not start on $LISTEN_ADDR:$PORT: $(tail -1 "$tmp/nginx-s")"
fi
# the proxy answers from the new container?
for _ in $(seq 50); do
  seen=$(curl -s -o /dev/null -D - --max-time 2 "http://$LISTEN_ADDR:$PORT/health" | tr -d '\r' | sed -n 's/^[Xx]-[Aa][Tt][Ff]-[Ii]mage: //p')
  [ "$seen" = "${id:7:12}" ] && break
  sleep 0.2
done
[ "$seen" = "${id:7:12}" ] || die "the proxy on $LISTEN_ADDR:$PORT still answers from ${seen:-nothing} after the switch"
done_ok=yes

# record: the serving deployment becomes the previous one
[ -f "$CURRENT" ] && cp "$CURRENT" "$PREVIOUS"
printf 'image=%s\nid=%s\ndigest=%s\nrepo_digest=%s\ncolour=%s\nmodel_dir=%s\ndeployed_at=%s\n' "$ref" "$id" "$digest" \
  "$repo_digest" "$colour" "$MODEL_DIR" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$CURRENT.new"
mv "$CURRENT.new" "$CURRENT"
record "$mode $ref id=$id digest=$digest colour=$colour"

# let the old workers finish what they hold, then stop the old container
if [ -n "$old" ] && [ "$old" != "$colour" ]; then
  pid=$(nginx_pid)
  for _ in $(seq 175); do
    pgrep -P "$pid" -f 'shutting down' >/dev/null || break
    sleep 0.2
  done
  if ! podman stop -t 30 "atf-$ENV-$old" >/dev/null 2>>"$ATF_PODMAN_LOG" \
     || ! podman rm "atf-$ENV-$old" >/dev/null 2>>"$ATF_PODMAN_LOG"; then
    say "FAIL: switched to $colour, but atf-$ENV-$old could not be stopped"; exit 1
  fi
fi
say "OK: $colour serves ${ref} (id ${id:7:12}, digest ${digest:7:12}) on $LISTEN_ADDR:$PORT${old:+; $old stopped}"
