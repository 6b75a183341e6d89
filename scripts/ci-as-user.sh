#!/usr/bin/env bash
# Run what CI runs on a GitHub runner -- a non-root user with passwordless sudo -- on this machine, where every
# session is root: create a throwaway user with subuid/subgid ranges and passwordless sudo, clone the repository into
# its home (the working tree's uncommitted changes included, unless --head), and as that user prove
#   1. the sudo apt-get path of scripts/ensure-system-deps.sh (a probe package installed through `sudo -n`),
#   2. `make install` (the venv, as non-root),
#   3. rootless podman (podman info: storage driver, cgroups, networking), and
#   4. `make test-container` (the container smoke test) with rootless podman.
# Then remove the user, its files, its sudoers entry and the probe package (if this script installed it). Installed
# Debian packages (sudo included) stay. Must be run as root. Takes several minutes (the venv install, an image build).
# Usage: scripts/ci-as-user.sh [--user NAME] [--port N] [--apt-probe PKG] [--base copy|build] [--head]
#                              [--skip-container] [--keep]
#   --user NAME       the throwaway user (default atfci); refuses to touch a user that exists already
#   --port N          the port the smoke-test container listens on, 127.0.0.1 (default 18931)
#   --apt-probe PKG   the Debian package the user installs through ensure-system-deps.sh + sudo (default hello);
#                     if it is installed already, it is removed first and left installed afterwards, as it was
#   --base copy       (default) load root's localhost/python-base:3.11 into the user's image store, as CI restores
#                     its podman-base cache; `--base build` lets the smoke test make its own (needs Docker Hub or
#                     sudo debootstrap in the smoke script)
#   --head            test the committed HEAD only, without the working tree's changes
#   --skip-container  stop after `make install` and the podman checks
#   --keep            keep the user and its home for inspection (remove later: userdel -r NAME; rm /etc/sudoers.d/atf-ci-NAME)
set -euo pipefail
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//p}' "$0"; }
USER_NAME=atfci PORT=18931 PROBE=hello BASE_MODE=copy HEAD_ONLY=0 SKIP_CONTAINER=0 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --user) USER_NAME=${2:?--user needs a name}; shift 2 ;;
    --port) PORT=${2:?--port needs a number}; shift 2 ;;
    --apt-probe) PROBE=${2:?--apt-probe needs a package}; shift 2 ;;
    --base) BASE_MODE=${2:?--base needs copy or build}; shift 2 ;;
    --head) HEAD_ONLY=1; shift ;;
    --skip-container) SKIP_CONTAINER=1; shift ;;
    --keep) KEEP=1; shift ;;
    *) echo "ci-as-user: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$BASE_MODE" in copy|build) ;; *) echo "ci-as-user: --base must be copy or build, not $BASE_MODE" >&2; exit 2 ;; esac
[[ "$USER_NAME" =~ ^[a-z][a-z0-9-]{0,30}$ ]] || { echo "ci-as-user: bad user name $USER_NAME" >&2; exit 2; }
[[ "$PROBE" =~ ^[a-z0-9][a-z0-9.+-]+$ ]] || { echo "ci-as-user: bad package name $PROBE" >&2; exit 2; }
[[ "$PORT" =~ ^[0-9]+$ ]] || { echo "ci-as-user: bad port $PORT" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "ci-as-user: run as root: it creates and removes a user (CI itself runs as a non-root user)" >&2; exit 1; }
getent passwd "$USER_NAME" >/dev/null && { echo "ci-as-user: user $USER_NAME exists already; pick another with --user or remove it" >&2; exit 1; }

SRC=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
SUDOERS=/etc/sudoers.d/atf-ci-$USER_NAME
BASE=localhost/python-base:3.11
T_START=$(date +%s)
log() { echo "ci-as-user: $*"; }
since() { echo $(( $(date +%s) - $1 )); }
results=()   # one line per step, printed at the end
note() { results+=("$*"); log "$*"; }

# -- as root: sudo, the user, its subordinate ids, passwordless sudo ------------------------------------------------
run_needs=" sudo uidmap git python3-venv podman runc slirp4netns containers-storage curl debootstrap "
case "$run_needs" in
  *" $PROBE "*) echo "ci-as-user: --apt-probe $PROBE is a package this run needs; pick one it can remove (e.g. hello)" >&2; exit 2 ;;
esac
"$SRC/scripts/ensure-system-deps.sh" sudo uidmap
probe_was_installed=0
if dpkg -s "$PROBE" >/dev/null 2>&1; then
  probe_was_installed=1
  log "$PROBE is installed already: removing it so the user's sudo apt-get has something to install (it stays installed after)"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 remove -y -qq "$PROBE" >/dev/null \
    || { echo "ci-as-user: could not remove the probe package $PROBE; pick another with --apt-probe" >&2; exit 1; }
fi

cleanup() {
  local rc=$?
  set +e
  if [ "$KEEP" = 1 ] && getent passwd "$USER_NAME" >/dev/null; then
    log "kept user $USER_NAME (home $HOME_DIR); remove it with: userdel -r $USER_NAME; rm -f $SUDOERS"
  elif getent passwd "$USER_NAME" >/dev/null; then
    local uid; uid=$(id -u "$USER_NAME")
    # the user's containers and image store (overlay files owned by its subordinate ids), then its processes
    # (podman's rootless pause process), all started by this script under this throwaway user
    as_user 'podman rm -af -t 0 >/dev/null 2>&1; podman system reset -f >/dev/null 2>&1' >/dev/null 2>&1
    for _ in 1 2 3; do
      pids=$(pgrep -u "$uid" || true)
      [ -z "$pids" ] && break
      for pid in $pids; do kill "$pid" 2>/dev/null; done
      sleep 1
    done
    for pid in $(pgrep -u "$uid" || true); do kill -9 "$pid" 2>/dev/null; done
    find /tmp /var/tmp -xdev -mindepth 1 -maxdepth 1 -user "$uid" -exec rm -rf {} + 2>/dev/null
    userdel -r "$USER_NAME" 2>/dev/null || userdel -r -f "$USER_NAME" 2>/dev/null
    sed -i "/^$USER_NAME:/d" /etc/subuid /etc/subgid
    rm -f "$SUDOERS"
    getent passwd "$USER_NAME" >/dev/null && echo "ci-as-user: could not remove user $USER_NAME" >&2
    [ -e "$HOME_DIR" ] && rm -rf "$HOME_DIR"
    log "removed user $USER_NAME, its home, subordinate ids, sudoers entry and files in /tmp"
  fi
  if [ "$probe_was_installed" = 0 ] && dpkg -s "$PROBE" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 purge -y -qq "$PROBE" >/dev/null 2>&1 \
      && log "purged the probe package $PROBE (it was not installed before)"
  elif [ "$probe_was_installed" = 1 ] && ! dpkg -s "$PROBE" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$PROBE" >/dev/null 2>&1 \
      && log "reinstalled $PROBE (it was installed before)"
  fi
  exit "$rc"
}
HOME_DIR=/home/$USER_NAME
trap cleanup EXIT
trap 'exit 130' INT TERM

useradd --create-home --home-dir "$HOME_DIR" --shell /bin/bash "$USER_NAME"
UID_N=$(id -u "$USER_NAME")
# useradd gives subordinate ids itself when /etc/subuid exists; otherwise take a free 65536-wide range
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  if ! grep -q "^$USER_NAME:" "$f"; then
    start=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' "$f")
    echo "$USER_NAME:$start:65536" >> "$f"
  fi
done
echo "$USER_NAME ALL=(ALL) NOPASSWD:ALL" > "$SUDOERS"; chmod 0440 "$SUDOERS"
visudo -cqf "$SUDOERS" || { echo "ci-as-user: $SUDOERS does not parse" >&2; exit 1; }
log "user $USER_NAME (uid $UID_N), subuid $(grep "^$USER_NAME:" /etc/subuid | cut -d: -f2-), passwordless sudo"

# the repository, as a clone (as actions/checkout would give) plus, unless --head, the working tree's changes
git clone -q --no-hardlinks "$SRC" "$HOME_DIR/atf"
if [ "$HEAD_ONLY" = 0 ]; then
  # every path that differs from HEAD (staged or not) and every untracked one; those gone from the tree are removed
  changed=$( { git -C "$SRC" diff --name-only HEAD; git -C "$SRC" ls-files -o --exclude-standard; } | sort -u | wc -l)
  (cd "$SRC" && { git diff -z --name-only HEAD; git ls-files -z -o --exclude-standard; } | while IFS= read -r -d '' f; do
     if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done | tar --null -T - -cf -) | tar -C "$HOME_DIR/atf" -xf -
  (cd "$SRC" && git diff -z --name-only --diff-filter=D HEAD) | while IFS= read -r -d '' f; do rm -f "$HOME_DIR/atf/$f"; done
  log "cloned $SRC at $(git -C "$SRC" rev-parse --short HEAD) plus $changed changed/untracked working-tree files"
else
  log "cloned $SRC at $(git -C "$SRC" rev-parse --short HEAD) (committed state only)"
fi
chown -R "$USER_NAME:" "$HOME_DIR"

# a clean login-like environment for the user; this machine's network settings (the TLS proxy's CA bundle, pip's
# local indexes) are part of the machine, as a runner's are, so they go along
user_env=(HOME="$HOME_DIR" USER="$USER_NAME" LOGNAME="$USER_NAME" SHELL=/bin/bash LANG=C.UTF-8
          PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
while IFS='=' read -r k v; do
  [[ "$k" =~ ^(PIP_[A-Z_]+|[A-Z_]*CA_?(BUNDLE|CERTS?|CERT_FILE|CERT_DIR|INFO)|SSL_CERT_(FILE|DIR)|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)$ ]] \
    && user_env+=("$k=$v")
done < <(env)
as_user() { runuser -u "$USER_NAME" -- env -i "${user_env[@]}" bash -c "cd ~/atf && $1"; }

# -- as the user ------------------------------------------------------------------------------------------------------
# shellcheck disable=SC2016  # expanded by the user's shell
as_user '[ "$(id -u)" != 0 ] && sudo -n true' || { echo "ci-as-user: passwordless sudo does not work for $USER_NAME" >&2; exit 1; }
note "identity: $(as_user 'id -un'), uid $UID_N, not root; sudo -n works"

t=$(date +%s)
as_user "scripts/ensure-system-deps.sh $PROBE" | sed 's/^/  [apt] /'
dpkg -s "$PROBE" >/dev/null 2>&1 || { echo "ci-as-user: $PROBE is not installed after the user's ensure-system-deps.sh" >&2; exit 1; }
note "sudo apt-get: the user's scripts/ensure-system-deps.sh $PROBE installed it through sudo -n in $(since "$t") s"

t=$(date +%s)
install_log=$HOME_DIR/make-install.log
if ! as_user "make install > $install_log 2>&1"; then
  tail -60 "$install_log" >&2; echo "ci-as-user: make install failed as $USER_NAME (log above)" >&2; exit 1
fi
# shellcheck disable=SC2016  # $HOME is the user's
as_user '.venv/bin/python -c "import atf, sys; assert sys.prefix.startswith(\"$HOME/\")"' \
  || { echo "ci-as-user: the venv's atf does not import as $USER_NAME" >&2; exit 1; }
note "make install: $(since "$t") s, venv $(du -sh "$HOME_DIR/atf/.venv" | cut -f1), owned by $(stat -c %U "$HOME_DIR/atf/.venv/bin/python")"

# rootless podman, with the project's settings (scripts/podman-env.sh): what this machine gives a non-root user
# shellcheck disable=SC2016  # expanded by the user's shell
podman_as_user() { as_user 'source scripts/podman-env.sh >/dev/null; trap '"'"'rm -rf "${ATF_PODMAN_DIR:-}"'"'"' EXIT; '"$1"; }
info=$(podman_as_user 'podman info --format "{{.Host.Security.Rootless}} {{.Store.GraphDriverName}} {{.Host.CgroupsVersion}} {{.Host.CgroupManager}} {{.Host.OCIRuntime.Name}} {{.Store.GraphRoot}}" 2>/dev/null') \
  || { echo "ci-as-user: podman info fails as $USER_NAME" >&2; podman_as_user 'podman info' >&2 || true; exit 1; }
read -r rootless driver cgv cgm runtime graphroot <<<"$info"
[ "$rootless" = true ] || { echo "ci-as-user: podman is not rootless for $USER_NAME ($info)" >&2; exit 1; }
note "rootless podman: storage $driver in $graphroot, cgroups $cgv ($cgm), runtime $runtime, uid map $(as_user 'podman unshare cat /proc/self/uid_map' | awk 'NR>1{printf "%s+%s ", $2, $3}')"
[ "$driver" = vfs ] && note "LIMITATION: storage driver vfs (slow, a full copy per layer): install containers-storage (its storage.conf sets overlay)"

# the base image (Docker Hub is out of reach here); then what a rootless container can and cannot do on this machine
if [ "$BASE_MODE" = copy ] && podman image exists "$BASE" 2>/dev/null; then
  t=$(date +%s)
  podman save -q "$BASE" | as_user 'podman load -q >/dev/null'
  note "base image: root's $BASE loaded into the user's store in $(since "$t") s (as CI restores its podman-base cache)"
fi
if as_user "podman image exists $BASE"; then
  # probe NAME 'PODMAN RUN OPTIONS' WHY-IF-IT-FAILS: run `true` in the base image, report what happened
  probe() {
    local out
    if out=$(podman_as_user "podman run --rm $2 $BASE true 2>&1 >/dev/null"); then
      if echo "$out" | grep -q -i -E 'not supported|ignored'; then   # accepted, but podman says it does nothing
        note "LIMITATION: rootless run with $1 starts, but podman warns: $(echo "$out" | grep -i -E 'not supported|ignored' | head -1 | sed 's/.*msg="\([^"]*\)".*/\1/')${3:+ -- $3}"
      else note "rootless run with $1: works"; fi
    else note "LIMITATION: rootless run with $1 fails here: $(echo "$out" | grep -v -i -E 'level=warning|systemd' | head -1 | sed 's/\\n.*//' | cut -c1-160)${3:+ -- $3}"; fi
  }
  probe "--network host (what the smoke test uses)" "--network host"
  tun=/dev/net/tun why=""
  as_user "test -r $tun -a -w $tun" \
    || why="$tun is mode $(stat -c %a "$tun" 2>/dev/null || echo absent) (root only) on this machine, so slirp4netns cannot open it; on a standard host (GitHub's runners) it is 0666"
  probe "-p 127.0.0.1:$((PORT + 1)):8000 (slirp4netns + rootlessport)" "-p 127.0.0.1:$((PORT + 1)):8000" "$why"
  why=""; [ "$cgv" = v1 ] && why="cgroups v1 (hybrid layout): no cgroup delegation to a rootless user; GitHub's Ubuntu runners use v2, where limits need the controllers delegated to the user (systemd)"
  probe "--memory 256m --pids-limit 100 (cgroup limits)" "--network host --memory 256m --pids-limit 100" "$why"
else
  note "rootless run probes: skipped, no $BASE in the user's store (--base build builds it in the smoke test)"
fi

if [ "$SKIP_CONTAINER" = 1 ]; then
  note "container smoke test: skipped (--skip-container)"
else
  t=$(date +%s)
  smoke_log=$HOME_DIR/make-test-container.log
  if ! as_user "PORT=$PORT make test-container > $smoke_log 2>&1"; then
    tail -30 "$smoke_log" >&2; echo "ci-as-user: make test-container failed as $USER_NAME (log above)" >&2; exit 1
  fi
  grep 'container-smoke: ' "$smoke_log" | sed 's/^/  [smoke] /'
  grep -q 'container-smoke: OK' "$smoke_log" || { echo "ci-as-user: make test-container printed no OK line" >&2; exit 1; }
  note "make test-container (rootless podman build + run + smoke): $(since "$t") s"
fi

log "---- summary (user $USER_NAME, $(since "$T_START") s in all) ----"
printf '  %s\n' "${results[@]}"
