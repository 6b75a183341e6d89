#!/usr/bin/env bash
# Fail when atf/ differs from what nbdev_export makes of nbs/ (hand edits, or notebooks not exported).
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2s/^# \{0,1\}//p' "$0"; echo "Usage: scripts/check-sync.sh   (env NBDEV_EXPORT: the nbdev_export to use)"; exit 0 ;; "") ;; *) echo "check-sync: no arguments (see --help)" >&2; exit 2 ;; esac
nbx=$(readlink -f "${NBDEV_EXPORT:-.venv/bin/nbdev_export}")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp -r settings.ini setup.py nbs atf "$tmp"/
(cd "$tmp" && "$nbx" >/dev/null)
if ! diff -r -x __pycache__ atf "$tmp/atf"; then
  echo "FAIL: atf/ is out of sync with nbs/. Edit the notebooks, run 'make export', commit both." >&2
  exit 1
fi
echo "sync check: atf/ matches nbdev_export of nbs/"
