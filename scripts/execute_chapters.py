#!/usr/bin/env python3
"""Execute the chapter notebooks and store small, stable outputs in them, so the docs pages show tables and figures.

Usage:
  scripts/execute_chapters.py [NOTEBOOK ...]          execute in place and store normalised outputs
  scripts/execute_chapters.py --check [NOTEBOOK ...]  execute into a temp copy; fail when committed outputs are stale

Default notebooks: every chapter, nbs/[0-9][0-9]*.ipynb except the 00* docs pages.

Each notebook runs in its own process with execnb's CaptureShell (what nbdev_test uses), in the notebook's directory,
skipping the cells nbdev_test skips (`#| eval: false`, the settings.ini tst_flags). Outputs are then normalised:
execution counts and metadata cleaned the way nbdev_clean does, stderr (warnings, logs, progress bars) dropped, PNG
figures at a modest dpi, and any output that prints a volatile value (a temp or machine path, a memory address, an
ANSI escape, a carriage-return progress bar, a timing such as `latency_ms`, "1.23 s" or "took") or that is over budget
is dropped with a message naming the notebook and cell, so the source can be fixed. `--check` compares text outputs cell by cell (images: only that they are there).

`--check` and numbers: floats from torch/onnxruntime training and inference differ in their last digits between CPUs
(a GitHub runner is not this machine), so a number inside text that is a float (it has a "." or an exponent) matches
when within a relative 1e-3 or an absolute 1e-6 (math.isclose(rel_tol=1e-3, abs_tol=1e-6)); integers must be equal,
and so must everything that is not a number, except that a run of whitespace matches any other (a table's column
widens when a number is printed longer). So 0.5156552791 vs 0.5156552801 passes and 0.81 vs 0.79 fails.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"

# Chapters allowed to have no stored output, with the reason (tests/test_chapter_outputs.py reads this).
# They are not executed unless named on the command line (nbdev_test still runs them).
EXEMPT: dict[str, str] = {
    "15a_scaling.ipynb": "starts a local Ray instance, whose raylet timed out waiting for its dashboard agent in three runs "
                         "under this script on a loaded 2-core machine (it ran in a plain process); its cells only assert",
}

# Budgets, in bytes of the notebook's JSON text.
MAX_OUTPUT = 80_000  # one output (a table, a PNG figure)
MAX_CELL = 120_000 # all outputs of one cell
MAX_NOTEBOOK = 300_000  # all outputs of one notebook
FIG_DPI = 72  # PNG figures: 6.4x4.8 in -> 461x346 px

# Text that must never be stored: it differs between machines or runs.
VOLATILE = {
    "a temp or machine path": re.compile(r"(?<![\w.])/(?:tmp|work|var/folders|private/var|home|root)/"),
    "a memory address": re.compile(r"\bat 0x[0-9a-fA-F]{6,}"),
    "an ANSI escape": re.compile(r"\x1b\["),
    "a carriage-return progress bar": re.compile(r"\r(?!\n)"),
    "a traceback": re.compile(r"Traceback \(most recent call last\)"),
    # a duration measured while it ran: a `latency_ms`/`*_seconds` value, "1.23 s", "30 ms", "took", "elapsed"
    "a timing": re.compile(r"\b\w*(?:_ms|_seconds|_secs)\b['\"]?\s*[:=]\s*[-+]?\.?\d"
                           r"|(?<![\w.])\d+\.\d+\s?(?:s|secs?|seconds)\b|(?<![\w.])\d+(?:\.\d+)?\s?ms\b"
                           r"|\b(?i:took|elapsed)\b"),
}
# plotly figures are stored as HTML that loads plotly.js from its CDN (renderer `notebook_connected`): the figure's data
# only, never the 4.8 MB inline plotly.js nor the bare plotly mime bundle. Their random div ids are made stable.
DROP_MIME = ("application/vnd.plotly.v1+json",)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TEXT_MIMES = ("text/plain", "text/html", "text/markdown", "text/latex")
# --check: floats in text match within these (see the header); integers and all other text exactly (whitespace runs aside)
REL_TOL, ABS_TOL = 1e-3, 1e-6
NUMBER = re.compile(r"([-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)")


def chapters() -> list[Path]:
    return sorted(p for p in NBS.glob("[0-9][0-9]*.ipynb") if not p.name.startswith("00"))


def default_chapters() -> list[Path]:
    return [p for p in chapters() if p.name not in EXEMPT]


def _text(v) -> str:
    return "".join(v) if isinstance(v, list) else str(v)


def output_text(o: dict) -> str:
    "Everything of an output that is text (images left out)."
    if o.get("output_type") == "stream":
        return _text(o.get("text", ""))
    if o.get("output_type") == "error":
        return "\n".join([o.get("ename", ""), o.get("evalue", "")] + list(o.get("traceback", [])))
    return "\n".join(_text(v) for k, v in o.get("data", {}).items() if k in TEXT_MIMES or k.startswith("application/"))


def volatile_reason(o: dict) -> str | None:
    t = output_text(o)
    for why, rx in VOLATILE.items():
        if rx.search(t):
            return why
    return None


def output_size(o: dict) -> int:
    return len(json.dumps(o, ensure_ascii=False))


def rel(p: Path) -> Path:
    return p.relative_to(ROOT) if p.is_relative_to(ROOT) else p


def cell_label(nb_path: Path, idx: int, cell: dict) -> str:
    first = next((ln.strip() for ln in _text(cell.get("source", "")).splitlines() if ln.strip()), "")
    return f"{rel(nb_path)} cell {idx} ({first[:60]!r})"


def lint(nb: dict, name: Path) -> list[str]:
    "What is wrong with the outputs stored in `nb` (no execution): one message per problem, naming the cell."
    problems, total = [], 0
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        label, size = cell_label(name, i, cell), 0
        if cell.get("execution_count") is not None:
            problems.append(f"{label}: has an execution count (run nbdev_clean)")
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                problems.append(f"{label}: stores an error output ({o.get('ename')})")
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                problems.append(f"{label}: stores stderr")
            if why := volatile_reason(o):
                problems.append(f"{label}: an output prints {why}")
            if any(k in o.get("data", {}) for k in DROP_MIME):
                problems.append(f"{label}: stores a plotly mime bundle")
            if "plotly.js v" in output_text(o) or "plotly.js" in output_text(o) and output_size(o) > 1_000_000:
                problems.append(f"{label}: stores an inline plotly.js")
            n = output_size(o)
            if n > MAX_OUTPUT:
                problems.append(f"{label}: an output of {n} bytes is over the {MAX_OUTPUT} B budget")
            size += n
        if size > MAX_CELL:
            problems.append(f"{label}: outputs of {size} bytes are over the {MAX_CELL} B cell budget")
        total += size
    if total > MAX_NOTEBOOK:
        problems.append(f"{rel(name)}: outputs of {total} bytes are over the {MAX_NOTEBOOK} B notebook budget")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# executing one notebook (in a child process: a fresh interpreter per notebook, as nbdev_test gives each its shell)

_SETUP = f"""
import matplotlib
matplotlib.rcParams['figure.dpi'] = {FIG_DPI}
matplotlib.rcParams['savefig.dpi'] = {FIG_DPI}
try:
    import plotly.io as _pio
    _pio.renderers.default = 'notebook_connected'
except ImportError:
    pass
"""


def _execute_one(src: Path, dest: Path) -> int:
    "Run `src` as nbdev_test does and write it, with raw outputs, to `dest`. Exit status 1 names the failing cell."
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    from nbdev.process import extract_directives

    os.environ["IN_TEST"] = "1"
    flags = set(get_config().get("tst_flags", "").split("|")) - {""}
    raw = json.loads(src.read_text())
    nb = read_nb(src)

    def skip(cell) -> bool:
        if cell.cell_type != "code":
            return True
        if "nbdev_export" + "(" in cell.source:
            return True
        d = extract_directives(copy.deepcopy(cell), remove=False) or {}
        if d.get("eval:", [""])[0].lower() == "false":
            return True
        return bool(flags & d.keys())

    shell = CaptureShell(src, mpl_format="png")
    shell.run(_SETUP)
    with working_directory(src.parent):
        for i, cell in enumerate(nb.cells):
            if skip(cell):
                continue
            outs = shell.run(cell.source)
            raw["cells"][i]["outputs"] = json.loads(json.dumps(outs, default=str))
            if shell.exc is not None:
                sys.stderr.write(f"FAIL: {cell_label(src, i, raw['cells'][i])} raised "
                                 f"{type(shell.exc).__name__}: {str(shell.exc).splitlines()[0] if str(shell.exc) else ''}\n")
                return 1
    dest.write_text(json.dumps(raw, ensure_ascii=False, indent=1) + "\n")
    return 0


def execute(src: Path, dest: Path, timeout: int) -> float:
    "Execute `src` in a fresh interpreter, writing raw outputs to `dest`; returns seconds taken."
    t0 = time.time()
    try:
        env = {**os.environ, "COLUMNS": "80", "PYTHONHASHSEED": "0"}  # argparse help width, set/dict orders: as everywhere
        r = subprocess.run([sys.executable, __file__, "--_one", str(src), str(dest)], cwd=src.parent, timeout=timeout,
                           capture_output=True, text=True, env=env)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"FAIL: {rel(src)} ran over {timeout}s") from None
    if r.returncode:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
        raise SystemExit(f"FAIL: {rel(src)} did not execute:\n{tail}")
    return time.time() - t0


# ---------------------------------------------------------------------------------------------------------------
# normalising


def normalise(path: Path, src_name: Path) -> list[str]:
    "Normalise the outputs stored in `path` in place (nbdev_clean included); return one note per output dropped."
    from nbdev.clean import nbdev_clean

    nb = json.loads(path.read_text())
    notes: list[str] = []
    total = 0
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        kept, size = [], 0
        for o in cell.get("outputs", []):
            label = cell_label(src_name, i, cell)
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                notes.append(f"{label}: dropped stderr: {_text(o.get('text', '')).strip().splitlines()[0][:100]!r}")
                continue
            data = o.get("data", {})
            if any(data.pop(k, None) is not None for k in DROP_MIME) and not any(
                    k == "text/html" or k.startswith("image/") for k in data):
                notes.append(f"{label}: dropped a plotly figure that has no HTML or image form")
                continue
            for k in [k for k in data if k.startswith("text/")]:
                ids: dict[str, str] = {}
                data[k] = UUID.sub(lambda m: ids.setdefault(m[0], f"atf-{i}-{len(ids)}"), _text(data[k]))
                data[k] = data[k].splitlines(True)
            o.get("metadata", {}).clear()
            if why := volatile_reason(o):
                notes.append(f"{label}: dropped an output that prints {why}")
                continue
            n = output_size(o)
            if n > MAX_OUTPUT or size + n > MAX_CELL or total + size + n > MAX_NOTEBOOK:
                notes.append(f"{label}: dropped an output of {n} bytes (budget: {MAX_OUTPUT} per output, "
                             f"{MAX_CELL} per cell, {MAX_NOTEBOOK} per notebook)")
                continue
            kept.append(o)
            size += n
        cell["outputs"] = kept
        total += size
    path.write_text(json.dumps(nb, ensure_ascii=False, indent=1) + "\n")
    cwd = os.getcwd()
    os.chdir(ROOT)  # nbdev_clean reads settings.ini from the working directory up
    try:
        nbdev_clean(fname=str(path))
    finally:
        os.chdir(cwd)
    return notes


# ---------------------------------------------------------------------------------------------------------------
# comparing


def comparable(o: dict) -> list[str]:
    "What of an output must match between committed and fresh: type, stream name, text; images only by mime type."
    head = [o.get("output_type", ""), o.get("name", "")]
    data = o.get("data", {})
    images = sorted(k for k in data if k.startswith("image/"))
    body = output_text(o) if not images else _text(data.get("text/plain", ""))
    return head + images + body.splitlines()


def _is_float(tok: str) -> bool:
    return any(c in tok for c in ".eE")


def lines_match(a: str, b: str) -> bool:
    "Two output lines are the same text with the same numbers: floats within REL_TOL/ABS_TOL, integers exactly."
    if a == b:
        return True
    pa, pb = NUMBER.split(a), NUMBER.split(b)  # [text, number, text, number, ..., text]
    if len(pa) != len(pb):
        return False
    for i, (x, y) in enumerate(zip(pa, pb)):
        if i % 2 == 0:
            if re.sub(r"\s+", " ", x) != re.sub(r"\s+", " ", y):
                return False
        elif _is_float(x) or _is_float(y):
            if not (_is_float(x) and _is_float(y) and math.isclose(float(x), float(y), rel_tol=REL_TOL, abs_tol=ABS_TOL)):
                return False
        elif int(x) != int(y):
            return False
    return True


def compare(committed: dict, fresh: dict, name: Path) -> list[str]:
    "One message per cell whose outputs differ."
    errors = []
    if len(committed["cells"]) != len(fresh["cells"]):
        return [f"{rel(name)}: cell count differs ({len(committed['cells'])} vs {len(fresh['cells'])})"]
    for i, (a, b) in enumerate(zip(committed["cells"], fresh["cells"])):
        if a.get("cell_type") != "code":
            continue
        x = [ln for o in a.get("outputs", []) for ln in comparable(o)]
        y = [ln for o in b.get("outputs", []) for ln in comparable(o)]
        if len(x) != len(y) or not all(map(lines_match, x, y)):
            diff = list(difflib.unified_diff(x, y, "committed", "fresh", n=1, lineterm=""))
            shown = "\n    ".join(d[:160] for d in diff[:14])
            errors.append(f"{cell_label(name, i, a)}: stored outputs differ from fresh ones "
                          f"(run scripts/execute_chapters.py {rel(name)}):\n    {shown}")
    return errors


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Budgets: %d B per output, %d B per cell, %d B per notebook; PNG at %d dpi."
                                 % (MAX_OUTPUT, MAX_CELL, MAX_NOTEBOOK, FIG_DPI))
    ap.add_argument("notebooks", nargs="*", type=Path, help="chapter notebooks (default: every nbs/[0-9][0-9]*.ipynb "
                    "except 00* and the EXEMPT ones)")
    ap.add_argument("--check", action="store_true", help="execute into a temp copy and fail when the committed "
                    "outputs differ from fresh ones (the notebooks are not changed); floats inside text match within "
                    "a relative %g or an absolute %g (CPUs differ in the last digits), integers and all other text "
                    "exactly, whitespace runs aside" % (REL_TOL, ABS_TOL))
    ap.add_argument("--timeout", type=int, default=900, help="seconds per notebook (default 900)")
    ap.add_argument("--_one", nargs=2, type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._one:
        return _execute_one(*a._one)

    nbs = [p.resolve() for p in a.notebooks] or default_chapters()
    for p in nbs:
        if not p.is_file():
            raise SystemExit(f"FAIL: no notebook {p}")
    failures = []
    with tempfile.TemporaryDirectory(prefix="atf-chapters-") as tmp:
        for p in nbs:
            fresh = Path(tmp) / p.name
            try:
                secs = execute(p, fresh, a.timeout)
            except SystemExit as e:  # one notebook that does not run does not stop the others
                print(e, file=sys.stderr)
                failures.append(str(e))
                continue
            notes = normalise(fresh, p)
            for n in notes:
                print(f"  note: {n}")
            if a.check:
                errs = compare(json.loads(p.read_text()), json.loads(fresh.read_text()), p)
                failures += errs
                print(f"{'FAIL' if errs else 'ok  '} {rel(p)} {secs:.1f}s")
                for e in errs:
                    print(f"FAIL: {e}", file=sys.stderr)
            else:
                old = p.read_text()
                new = fresh.read_text()
                # keep the committed sources byte for byte: only outputs come from the fresh run
                if json.loads(old)["cells"] and [c["source"] for c in json.loads(old)["cells"]] != \
                        [c["source"] for c in json.loads(new)["cells"]]:
                    raise SystemExit(f"FAIL: {rel(p)}: sources changed while it ran")
                if new != old:
                    p.write_text(new)
                n_out = sum(len(c.get("outputs", [])) for c in json.loads(new)["cells"])
                print(f"{rel(p)} {secs:.1f}s {n_out} outputs, {len(new.encode()) - len(old.encode()):+d} B")
    if failures:
        print(f"FAIL: {len(failures)} problem(s): notebooks that did not run or cells with stale outputs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
