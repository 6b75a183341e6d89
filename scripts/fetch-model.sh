#!/usr/bin/env bash
# Fetch a released model: download a tarball (`gh release download TAG --pattern ASSET`) or take a local one, unpack it,
# check the sha256 of its manifest.json against the expected value, verify every file against the manifest
# (atf.manifest.Manifest.read_and_verify; files the manifest does not list are refused), then move it to DEST.
# Usage: scripts/fetch-model.sh (--release TAG --asset PATTERN [--repo OWNER/NAME] | --tarball FILE)
#                               [--sha256 HEX] --dest DIR [--force]
#        scripts/fetch-model.sh --pack MODEL_DIR TARBALL   (verify an exported model, tar it, print its manifest sha256)
# The expected sha256 is --sha256 or $MODEL_MANIFEST_SHA256: a value recorded when the model was released (a repository
# or environment variable), never one computed from the download itself. DEST must not exist, be empty, or --force.
# The tarball holds the model directory's files at its top level or in one top-level folder. PYTHON: an interpreter
# with atf installed (default .venv/bin/python if present, else python3: the serving image's /opt/venv one).
set -euo pipefail
die() { echo "fetch-model: error: $*" >&2; exit 1; }
usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }
_repo=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${PYTHON:-}" ] || { if [ -x "$_repo/.venv/bin/python" ]; then PYTHON=$_repo/.venv/bin/python; else PYTHON=python3; fi; }

release="" asset="" repo="" tarball="" expected="${MODEL_MANIFEST_SHA256:-}" dest="" force=0 pack_dir="" pack_out=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --release|--asset|--repo|--tarball|--sha256|--dest)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value"; fi
      case "$1" in
        --release) release=$2 ;; --asset) asset=$2 ;; --repo) repo=$2 ;;
        --tarball) tarball=$2 ;; --sha256) expected=$2 ;; --dest) dest=$2 ;;
      esac
      shift 2 ;;
    --force) force=1; shift ;;
    --pack) [ $# -eq 3 ] || die "--pack needs MODEL_DIR TARBALL and nothing else"; pack_dir=$2; pack_out=$3; shift 3 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# verify DIR against its manifest (schema, every listed file's sha256, no unlisted file); prints run_id and key
verify() {
  "$PYTHON" - "$1" <<'PY' || exit 1
import sys
from pathlib import Path
try:
    from atf.manifest import MANIFEST_FILE, Manifest, ManifestError
except ImportError as e:
    sys.exit(f"fetch-model: error: cannot import atf ({e}): set PYTHON to an interpreter with atf installed")
d = Path(sys.argv[1])
try:
    m = Manifest.read_and_verify(d)
except ManifestError as e:
    sys.exit(f"fetch-model: error: {e}")
extra = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.relative_to(d).as_posix() not in {*m.files, MANIFEST_FILE})
if extra:
    sys.exit(f"fetch-model: error: not listed in the manifest: {', '.join(extra[:5])}")
print(f"{m.run_id} {m.key}")
PY
}

if [ -n "$pack_dir" ]; then
  [ -d "$pack_dir" ] || die "$pack_dir is not a directory"
  info=$(verify "$pack_dir"); run_id=${info% *}; key=${info#* }
  tar -C "$(dirname "$pack_dir")" -czf "$pack_out" "$(basename "$pack_dir")"
  sha=$(sha256sum "$pack_dir/manifest.json" | cut -d' ' -f1)
  echo "fetch-model: packed $pack_dir ($run_id $key) -> $pack_out; manifest sha256 $sha (set MODEL_MANIFEST_SHA256 to it)"
  exit 0
fi

[ -n "$dest" ] || die "--dest DIR is required"
if [ -n "$tarball" ]; then
  [ -z "$release$asset$repo" ] || die "give --tarball or --release/--asset, not both"
  [ -f "$tarball" ] || die "tarball $tarball does not exist"
else
  if [ -z "$release" ] || [ -z "$asset" ]; then die "give --tarball FILE or --release TAG --asset PATTERN"; fi
fi
[ -n "$expected" ] || die "no expected manifest sha256: pass --sha256 or set MODEL_MANIFEST_SHA256"
expected=$(printf '%s' "$expected" | tr 'A-F' 'a-f')
[[ "$expected" =~ ^[0-9a-f]{64}$ ]] || die "expected manifest sha256 '$expected' is not 64 hex digits"
if [ -e "$dest" ] && [ "$force" = 0 ] && [ -n "$(ls -A "$dest" 2>/dev/null || echo file)" ]; then
  die "$dest exists and is not empty (use --force to replace it)"
fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ -z "$tarball" ]; then
  command -v gh >/dev/null || die "gh (GitHub CLI) is not installed: needed for --release"
  gh release download "$release" --pattern "$asset" --dir "$work/dl" ${repo:+--repo "$repo"} 2>"$work/gh.err" \
    || die "gh release download $release --pattern $asset failed: $(tr '\n' ' ' < "$work/gh.err")"
  shopt -s nullglob; got=("$work"/dl/*); shopt -u nullglob
  [ ${#got[@]} -eq 1 ] || die "release $release asset pattern '$asset' matched ${#got[@]} files, want exactly 1"
  tarball=${got[0]}
fi

# unpack with Python's tarfile 'data' filter: no absolute paths, no '..', no links or devices outside the folder
mkdir "$work/x"
"$PYTHON" - "$tarball" "$work/x" <<'PY' || exit 1
import sys, tarfile
from pathlib import PurePosixPath
try:
    with tarfile.open(sys.argv[1]) as t:
        members = t.getmembers()
        if bad := [m.name for m in members if not (m.isfile() or m.isdir())]:
            sys.exit(f"fetch-model: error: {sys.argv[1]}: only files and folders allowed, not {bad[:3]}")
        if bad := [m.name for m in members if PurePosixPath(m.name).is_absolute() or ".." in PurePosixPath(m.name).parts]:
            sys.exit(f"fetch-model: error: {sys.argv[1]}: member paths outside the folder: {bad[:3]}")
        t.extractall(sys.argv[2], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
except (tarfile.TarError, OSError) as e:
    sys.exit(f"fetch-model: error: cannot unpack {sys.argv[1]}: " + " ".join(str(e).split()))
PY
model="$work/x"
if [ ! -f "$model/manifest.json" ]; then
  shopt -s nullglob dotglob; top=("$work"/x/*); shopt -u nullglob dotglob
  if [ ${#top[@]} -ne 1 ] || [ ! -f "${top[0]}/manifest.json" ]; then
    die "$(basename "$tarball") has no manifest.json at its top level or in one top-level folder"
  fi
  model=${top[0]}
fi

actual=$(sha256sum "$model/manifest.json" | cut -d' ' -f1)
[ "$actual" = "$expected" ] || die "manifest.json sha256 is $actual, expected $expected (not the released model)"
info=$(verify "$model"); run_id=${info% *}; key=${info#* }

rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
mv "$model" "$dest"
chmod -R u+rwX,go+rX,go-w "$dest"
echo "fetch-model: OK $dest: run $run_id, key $key, manifest sha256 $actual, every file verified"
