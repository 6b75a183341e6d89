#!/usr/bin/env bash
# Install the Debian packages atf's own commands need, and only those that are missing.
# Usage: scripts/ensure-system-deps.sh [EXTRA_PACKAGE ...]
set -euo pipefail
need=()
python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
command -v git >/dev/null || need+=(git)
for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
