#!/usr/bin/env bash
# Install the Debian packages atf's own commands need, and only those that are missing.
# Usage: scripts/ensure-system-deps.sh [EXTRA_PACKAGE ...]
# As root it runs apt-get itself; as any other user (a GitHub runner, a developer) it runs it through sudo
# (non-interactive `sudo -n` when there is no terminal to ask for a password on). Waits up to
# APT_LOCK_TIMEOUT seconds (default 600) for another apt/dpkg run to release its lock.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,6s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
need=()
python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
command -v git >/dev/null || need+=(git)
for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "ensure-system-deps: need root or sudo to install: ${need[*]}" >&2; exit 1; }
  SUDO=(sudo); [ -t 0 ] || SUDO+=(-n)
fi
echo "installing system packages${SUDO:+ with ${SUDO[*]}}: ${need[*]}"
# sudo resets the environment, so DEBIAN_FRONTEND goes through env(1) on its command line
apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="${APT_LOCK_TIMEOUT:-600}")
"${apt[@]}" update -qq
"${apt[@]}" install -y -qq "${need[@]}"
