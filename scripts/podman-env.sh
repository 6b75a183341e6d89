#!/usr/bin/env bash
# The podman settings atf's scripts share (container-smoke.sh, build-image.sh, deploy.sh, deploy-test.sh).
# Usage: source scripts/podman-env.sh        (as root, or as a user with subuids; `bash scripts/podman-env.sh --help`)
#
# Installs podman, runc, uidmap and containers-storage when missing (scripts/ensure-system-deps.sh), then exports
#   CONTAINERS_CONF   a containers.conf for machines like this one: runc (crun refuses hybrid cgroup layouts),
#                     cgroupfs (no systemd), file events, and an open-files limit podman can set. /etc stays untouched.
#                     An existing CONTAINERS_CONF (an operator's own, or the one a calling script made) is kept.
#   ATF_PODMAN_DIR    the folder this call made for the file (empty when CONTAINERS_CONF was kept): the caller
#                     removes it on exit, e.g. `trap 'rm -rf "${ATF_PODMAN_DIR:-}"' EXIT`
#   ATF_PODMAN_LOG    where callers send podman's notices (absent systemd timers and the like), to show on failure
# and defines `atf_base_image`, which prints the base image to build on (python:3.11-slim when it can be pulled,
# else localhost/python-base:3.11, built once with debootstrap: Debian bookworm minbase with Python 3.11).
_atf_podman_usage() { sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in -h|--help) _atf_podman_usage; exit 0 ;; *) echo "podman-env.sh is sourced, not run: source ${0}" >&2; exit 2 ;; esac
fi

_atf_scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# containers-storage: its storage.conf sets the overlay driver; without it Debian 12's podman 4.3 gives a rootless
# user (a CI runner) vfs, a full copy of every layer. slirp4netns: rootless networking (-p)
"$_atf_scripts/ensure-system-deps.sh" podman runc uidmap containers-storage slirp4netns

if [ -n "${CONTAINERS_CONF:-}" ] && [ -f "$CONTAINERS_CONF" ]; then
  ATF_PODMAN_DIR=""
  ATF_PODMAN_LOG=${ATF_PODMAN_LOG:-$(dirname "$CONTAINERS_CONF")/podman.log}
else
  ATF_PODMAN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/atf-podman.XXXXXX")
  _atf_nofile=$(ulimit -Hn); [ "$_atf_nofile" = unlimited ] && _atf_nofile=1048576
  cat > "$ATF_PODMAN_DIR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=${_atf_nofile}:${_atf_nofile}", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  CONTAINERS_CONF=$ATF_PODMAN_DIR/containers.conf
  ATF_PODMAN_LOG=$ATF_PODMAN_DIR/podman.log
  unset _atf_nofile
fi
export CONTAINERS_CONF ATF_PODMAN_DIR ATF_PODMAN_LOG

# The base image to build on, printed on stdout; BASE_IMAGE wins when set. With ATF_BASE_CACHE (a file path; ci.yml
# keeps it in actions/cache) the base is loaded from that `podman save` archive when present, and saved to it when not.
atf_base_image() {
  if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
  local cache=${ATF_BASE_CACHE:-} img
  if [ -n "$cache" ] && [ -f "$cache" ] && ! podman image exists docker.io/library/python:3.11-slim \
     && ! podman image exists localhost/python-base:3.11; then                 # loaded once, not on every build
    podman load -q -i "$cache" >/dev/null 2>&1 || echo "podman-env: could not load $cache" >&2
  fi
  img=$(_atf_find_base_image)
  if [ -n "$cache" ] && [ ! -f "$cache" ]; then
    mkdir -p "$(dirname "$cache")"
    podman save -q -o "$cache" "$img" >/dev/null 2>&1 || { rm -f "$cache"; echo "podman-env: could not save $img to $cache" >&2; }
  fi
  echo "$img"
}

_atf_find_base_image() {
  if podman image exists docker.io/library/python:3.11-slim \
     || podman pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
    echo docker.io/library/python:3.11-slim; return
  fi
  local base=localhost/python-base:3.11 rootfs mirror sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo           # debootstrap needs root; the import goes to the caller's own store
  if ! podman image exists "$base"; then
    echo "podman-env: Docker Hub unreachable: building $base with debootstrap (Debian bookworm, Python 3.11)" >&2
    "$_atf_scripts/ensure-system-deps.sh" debootstrap
    rootfs=$(mktemp -d)
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 || true)   # apt's own mirror
    $sudo debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$rootfs" \
      ${mirror:+"$mirror"} >/dev/null
    # shellcheck disable=SC2016  # $1 is expanded by the inner shell
    $sudo sh -c 'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' sh "$rootfs"
    $sudo tar -C "$rootfs" -c . | podman import -q - "$base" >/dev/null
    $sudo rm -rf "$rootfs"
  fi
  echo "$base"
}
