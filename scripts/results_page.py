"""Write the docs' Results page (nbs/00e_results.qmd) from the memory bank's run summaries and the run folders.

The page is generated, never edited by hand: the same inputs give the same bytes (no clock, no machine paths; runs
newest first by their own recorded time), so a test can check that the committed page is up to date.

    python scripts/results_page.py                     # memory_bank/ and reports/ as they are on this machine (any cwd)
    python scripts/results_page.py --committed         # only what git tracks there: what a clean clone has
    python scripts/results_page.py --committed --check # exit 1 if nbs/00e_results.qmd is not what this makes

Inputs, through atf's public readers: `atf.memory.read_runs` (memory_bank/runs.jsonl: one summary per experiment or
tuning study) and `atf.reports.run_rows` (the run folders under reports/), then each run folder's documented files:
run.json (out-of-sample Sharpe, the 'Is it luck?' figures), config.yaml, metrics.csv and folds.csv.

The page is a .qmd, not a notebook: Quarto renders it natively (front matter, markdown tables), nbdev's proc_nbs copies
it unchanged into _proc/, nbdev_test, nbdev_clean and nbdev_export leave it alone, and plain text compares byte for
byte (a notebook would add JSON, cell ids and nbdev_clean's rewriting to what the test compares).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from atf.memory import read_runs
from atf.reports import run_rows

ROOT = Path(__file__).resolve().parents[1]
SERIES = ("model", "strategy", "logistic", "buy_and_hold")   # the columns of a run, in the order the tables show them
LABEL = {"model": "model", "strategy": "rule", "logistic": "logistic", "buy_and_hold": "buy-and-hold"}
HEADLINE = (("sharpe", "Sharpe", "ratio"), ("cagr", "CAGR", "pct"), ("max_drawdown", "max drawdown", "pct"))


# ---------------------------------------------------------------- formatting (one place, so the bytes are stable)
def num(x, kind: str = "ratio") -> str:
    "A number as the tables show it: ratios to 3 decimals, percentages to 1, '-' when missing or not finite."
    try: x = float(x)
    except (TypeError, ValueError): return "-"
    if not math.isfinite(x): return "-"
    return f"{x:.1%}" if kind == "pct" else f"{x:.3f}"


def param(v) -> str:
    "A parameter value: floats to 4 significant digits, the rest as written."
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def params_text(p) -> str:
    "A parameter set (a dict, or the JSON text of one) as `name=value, ...` in its own key order."
    if isinstance(p, str):
        try: p = json.loads(p)
        except ValueError: return cell(p)
    if not isinstance(p, dict): return cell(p)
    return ", ".join(f"{k}={param(v)}" for k, v in p.items()) or "-"


def cell(x) -> str:
    "Text safe inside a markdown table cell."
    return str(x).replace("|", "\\|").replace("\n", " ") if x not in (None, "") else "-"


def table(header: list[str], rows: list[list]) -> list[str]:
    "A markdown table (with a blank line after it)."
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows] + [""]


# ---------------------------------------------------------------- reading the inputs
def committed_copy(folder: Path, into: Path) -> Path:
    "The files git tracks under `folder`, as the index holds them (a clean clone's), copied into `into`; read-only git."
    top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode: raise SystemExit(f"results_page: --committed needs {folder} inside a git work tree ({top.stderr.strip()})")
    listing = subprocess.run(["git", "-C", str(folder), "ls-files", "-s", "-z", "--", "."], capture_output=True, check=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    for entry in filter(None, listing.split(b"\0")):
        meta, rel = entry.split(b"\t", 1)
        blob = subprocess.run(["git", "-C", str(folder), "cat-file", "blob", meta.split()[1].decode()],
                              capture_output=True, check=True).stdout
        (into / rel.decode()).parent.mkdir(parents=True, exist_ok=True)
        (into / rel.decode()).write_bytes(blob)
    return into


def read_json(path: Path) -> dict:
    try: d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError): return {}
    return d if isinstance(d, dict) else {}


def read_yaml(path: Path) -> dict:
    try: d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError): return {}
    return d if isinstance(d, dict) else {}


def run_folders(reports: Path) -> list[dict]:
    "Every complete run folder under `reports` (atf.reports.run_rows), with its run.json, config.yaml and tables."
    if not reports.is_dir(): return []
    rows = run_rows(reports)
    runs = []
    for run in sorted(set(rows["run"])):
        folder = reports / run
        info = read_json(folder / "run.json")
        if not info: continue                                   # incomplete: no run.json yet
        metrics = folds = None
        if (folder / "metrics.csv").exists(): metrics = pd.read_csv(folder / "metrics.csv", header=[0, 1], index_col=0)
        if (folder / "folds.csv").exists(): folds = pd.read_csv(folder / "folds.csv")
        runs.append({"run_id": run, "info": info, "config": read_yaml(folder / "config.yaml"), "metrics": metrics,
                     "folds": folds, "when": str(info.get("created") or "")})
    return runs


# ---------------------------------------------------------------- the page
def config_rows(cfg: dict, info: dict) -> list[list]:
    "The settings that decide a run's numbers, from its config.yaml."
    data, wf, tun, costs = (cfg.get(k) or {} for k in ("data", "walk_forward", "tuning", "costs"))
    span = f"{data.get('start') or 'first bar'} .. {data.get('end') or 'last bar'}"
    rows = [["data", f"{data.get('dataset', '-')}: {', '.join(map(str, data.get('assets') or info.get('assets') or []))}"],
            ["timeframes", ", ".join(map(str, data.get("timeframes") or ["native"]))], ["span", span]]
    if "model" in cfg:
        m = cfg["model"]
        rows += [["model", f"{m.get('name')} (window {m.get('window')}, params {params_text(m.get('params') or {})})"],
                 ["search space", ", ".join(cfg.get("search_space") or {}) or "the learner's default space"],
                 ["tuning", f"{tun.get('n_trials')} trials per fold, pruner {tun.get('pruner')}, metric {tun.get('metric')} "
                            f"on validation, backend {tun.get('backend', 'optuna')}"]]
    if "strategy" in cfg:
        s = cfg["strategy"]
        rows += [["strategy", f"{s.get('kind')}: fast {s.get('fast')} x slow {s.get('slow')}, chosen by validation {cfg.get('metric', 'sharpe')}"]]
    scheme = wf.get("scheme", "walk_forward")
    split = (f"{wf.get('n_groups')} groups, {wf.get('n_test_groups')} tested per split" if scheme == "cpcv" else
             f"train {wf.get('train')}, validation {wf.get('validation')}, test {wf.get('test')}"
             f"{', expanding' if wf.get('expanding') else ''}")
    rows += [["walk-forward", f"{scheme}: {split}, purge {wf.get('purge') if wf.get('purge') is not None else 'label horizon'}, "
                              f"embargo {wf.get('embargo', 0)}"],
             ["costs", f"{costs.get('fee_bps')} bp commission + {costs.get('slippage_bps')} bp slippage"],
             ["config hash", info.get("config_hash")], ["atf", f"{info.get('atf_version')} at commit {str(info.get('git_commit') or '-')[:12]}"]]
    return rows


def oos_rows(run: dict) -> tuple[list[str], list[list]]:
    "Out-of-sample Sharpe, CAGR and max drawdown of the model (or rule) and each baseline, per asset x timeframe."
    info, metrics = run["info"], run["metrics"]
    sharpe = info.get("oos_sharpe") or {}
    keys = sorted(sharpe) if sharpe else sorted({k for k, _ in metrics.columns}) if metrics is not None else []
    series = [s for s in SERIES if any(s in (sharpe.get(k) or {}) for k in keys)
              or (metrics is not None and any((k, s) in metrics.columns for k in keys))]
    header = ["key"] + [f"{LABEL[s]} {label}" for s in series for _, label, _ in HEADLINE]
    rows = []
    for k in keys:
        row = [k]
        for s in series:
            for name, _, kind in HEADLINE:
                v = None
                if metrics is not None and (k, s) in metrics.columns and name in metrics.index: v = metrics.loc[name, (k, s)]
                elif name == "sharpe": v = (sharpe.get(k) or {}).get(s)
                row.append(num(v, kind))
        rows.append(row)
    return header, rows


def fold_rows(folds) -> tuple[list[str], list[list]]:
    "Each fold's choice (best parameters or chosen rule), its validation score and test-period returns."
    if folds is None or not len(folds): return [], []
    key = folds["asset"].astype(str) + (("_" + folds["timeframe"].astype(str)) if "timeframe" in folds else "")
    choice = "best_params" if "best_params" in folds else "chosen"
    score = "best_validation" if "best_validation" in folds else "selection_sharpe"
    header = ["key", "fold", "test", "chosen on train + validation", "validation score", "test return", "buy-and-hold"]
    if "logistic_return" in folds: header.append("logistic")
    rows = []
    for k, (_, f) in sorted(zip(key, folds.iterrows()), key=lambda kv: (kv[0], int(kv[1][1]["fold"]))):
        row = [k, int(f["fold"]), f"{f['test_start']} .. {f['test_end']}", params_text(f[choice]) if choice == "best_params" else f[choice],
               num(f.get(score)), num(f.get("test_return"), "pct"), num(f.get("buy_and_hold_return"), "pct")]
        if "logistic_return" in folds: row.append(num(f.get("logistic_return"), "pct"))
        rows.append(row)
    return header, rows


def luck_rows(luck: dict) -> list[list]:
    "DSR, PBO, out-of-sample PSR, trials and the verdict of each key ('Is it luck?', atf.luck)."
    rows = []
    for k in sorted(luck or {}):
        v = luck[k] or {}
        trials = v.get("trials") or {}
        n = f"{trials.get('trials')} ({trials.get('pruned', 0)} pruned, {trials.get('failed', 0)} failed)" if trials else "-"
        rows.append([k, num(v.get("dsr")), num(v.get("pbo")), num(v.get("oos_psr")), n, v.get("verdict")])
    return rows


LUCK_HEADER = ["key", "DSR", "PBO", "out-of-sample PSR", "trials", "verdict"]


def run_section(run: dict, summary: dict | None) -> list[str]:
    info = run["info"]
    out = [f"### {run['run_id']}", "",
           f"{info.get('kind', 'run')} `{info.get('name', run['run_id'])}`, recorded {run['when'][:19].replace('T', ' ') or '-'} UTC"
           f"{', ' + str(info['seconds']) + ' s' if info.get('seconds') is not None else ''}; "
           f"{'summary in the memory bank' if summary else 'no memory-bank summary'}.", ""]
    if run["config"]: out += ["**Config**", ""] + table(["setting", "value"], config_rows(run["config"], info))
    header, rows = oos_rows(run)
    if rows: out += ["**Out of sample, against the baselines** (net of costs, one continuous account per key)", ""] + table(header, rows)
    if info.get("luck"): out += ["**Is it luck?** (DSR below 0.95 or PBO above 0.5: likely luck)", ""] + table(LUCK_HEADER, luck_rows(info["luck"]))
    header, rows = fold_rows(run["folds"])
    if rows: out += ["**Per fold**", ""] + table(header, rows)
    return out


def summary_section(s: dict) -> list[str]:
    "A memory-bank summary whose run folder is not among the inputs."
    out = [f"### {s.get('run_id')}", "", f"{s.get('kind')} summary recorded {str(s.get('recorded', '-'))[:19].replace('T', ' ')} UTC "
           "(memory bank only: its run folder is not among the inputs).", ""]
    if s.get("kind") == "tuning":
        return out + table(["setting", "value"], [["storage kind", str(s.get("storage", "")).split(":", 1)[0]],
                                                  ["direction", s.get("direction")], ["best value", num(s.get("best_value"))],
                                                  ["best params", params_text(s.get("best_params") or {})],
                                                  ["trials", params_text(s.get("trials") or {})], ["stopped by", s.get("stopped_by")],
                                                  ["space", ", ".join(s.get("space") or {})]])
    out += table(["setting", "value"], [["model", s.get("model")], ["metric", s.get("metric")], ["config hash", s.get("config_hash")]])
    sharpe = s.get("oos_sharpe") or {}
    series = [c for c in SERIES if any(c in (sharpe[k] or {}) for k in sharpe)]
    if sharpe: out += ["**Out-of-sample Sharpe, against the baselines**", ""] + table(["key"] + [LABEL[c] for c in series], [[k] + [num((sharpe[k] or {}).get(c)) for c in series] for k in sorted(sharpe)])
    if s.get("luck"): out += ["**Is it luck?**", ""] + table(LUCK_HEADER, luck_rows(s["luck"]))
    fold = s.get("best_params_per_fold") or {}
    if fold: out += ["**Best parameters per fold**", ""] + table(["fold", "best parameters"], [[k, params_text(fold[k])] for k in sorted(fold, key=_fold_order)])
    return out


def _fold_order(k: str):
    key, _, fold = k.partition("/fold")
    return (key, int(fold) if fold.isdigit() else -1, k)


def page(memory: Path, reports: Path, committed: bool, memory_label: str, reports_label: str) -> str:
    summaries = read_runs(memory)
    runs = run_folders(reports)
    by_id = {s.get("run_id"): s for s in summaries}                       # the latest summary of each run id
    alone = sorted((s for s in by_id.values() if s.get("run_id") not in {r["run_id"] for r in runs}),
                   key=lambda s: (str(s.get("recorded", "")), str(s.get("run_id"))), reverse=True)
    runs = sorted(runs, key=lambda r: (r["when"], r["run_id"]), reverse=True)
    where = ("the files git tracks under" if committed else "the files on the machine that ran it under")
    lines = ["---", "title: Results", "description: \"Generated from the memory bank and the run folders: configs, best "
             "parameters per fold, out-of-sample metrics against the baselines, and how much of it is luck.\"",
             "output-file: results.html", "---", "",
             "<!-- Generated by scripts/results_page.py; edit the script, not this page. -->", "",
             f"This page is written by `scripts/results_page.py` from {where} `{memory_label}/` (the run summaries in "
             f"`runs.jsonl`, `atf.memory`) and `{reports_label}/` (one folder per run, `atf.reports`). "
             f"It found {len(summaries)} run summar{'y' if len(summaries) == 1 else 'ies'} and {len(runs)} complete run "
             f"folder{'' if len(runs) == 1 else 's'}.", ""]
    if committed:
        lines += ["It was made with `--committed`: only what a clean clone of the repository holds. Run folders "
                  "(`reports/*`) and run summaries (`memory_bank/runs/`, `memory_bank/runs.jsonl`) are ignored by git "
                  "unless a run is committed on purpose (`atf experiment CONFIG --git-commit` commits its summary), so a "
                  "clean clone holds only the runs someone chose to publish.", ""]
    if not runs and not alone:
        lines += ["## No runs yet", "", "There is nothing to report from these inputs. To fill this page with your own runs:", "",
                  "```bash", "make demo                                  # the rule study and the LSTM experiment",
                  "python scripts/results_page.py             # rewrites nbs/00e_results.qmd from memory_bank/ and reports/",
                  "python scripts/results_page.py --committed # back to the committed copy: only what git tracks",
                  "```", "",
                  "`nbs/00e_results.qmd` is the page Quarto renders (here, as results.html). The docs workflow "
                  "(`.github/workflows/docs.yml`) runs `make demo` and then `scripts/results_page.py` before `nbdev_docs`, so "
                  "the published site shows the demo runs it made; the nightly workflow regenerates it from its own runs and "
                  "uploads it as an artifact. The "
                  "copy in the repository is made with `--committed`, and `tests/test_docs_pages.py` checks it is up to date "
                  "(`--committed --check`). The demo's figures as last measured by the project (rule study and LSTM against "
                  "buy-and-hold and the logistic baseline, with the luck verdicts) are in `memory_bank/progress.md`.", ""]
        return "\n".join(lines).rstrip("\n") + "\n"
    lines += ["## Overview", ""]
    overview = []
    for r in runs:
        info, sharpe = r["info"], r["info"].get("oos_sharpe") or {}
        for k in sorted(sharpe) or ["-"]:
            s = sharpe.get(k) or {}
            verdict = ((info.get("luck") or {}).get(k) or {}).get("verdict", "-")
            overview.append([r["run_id"], info.get("kind"), info.get("model"), k, num(s.get("model", s.get("strategy"))),
                             num(s.get("logistic")), num(s.get("buy_and_hold")), str(verdict).split(":")[0]])
    for s in alone:
        for k in sorted(s.get("oos_sharpe") or {}) or ["-"]:
            v = (s.get("oos_sharpe") or {}).get(k) or {}
            overview.append([s.get("run_id"), s.get("kind"), s.get("model"), k, num(v.get("model")), num(v.get("logistic")),
                             num(v.get("buy_and_hold")), str(((s.get("luck") or {}).get(k) or {}).get("verdict", "-")).split(":")[0]])
    lines += ["Out-of-sample Sharpe ratio of each run and key (asset x timeframe), net of costs, newest first.", ""]
    lines += table(["run", "kind", "model", "key", "model Sharpe", "logistic", "buy-and-hold", "luck"], overview)
    if runs: lines += ["## Run folders", ""] + [l for r in runs for l in run_section(r, by_id.get(r["run_id"]))]
    if alone: lines += ["## Memory-bank summaries", ""] + [l for s in alone for l in summary_section(s)]
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write the docs' Results page from the memory bank's run summaries and the "
                                            "run folders (deterministic: same inputs, same bytes).")
    p.add_argument("--memory", help="the memory bank folder (default: the repository's memory_bank, from any working "
                   "directory; a path given here is relative to the working directory)")
    p.add_argument("--reports", help="the folder of run folders (default: the repository's reports)")
    p.add_argument("--out", help="the page to write (default: the repository's nbs/00e_results.qmd, the page Quarto "
                   "renders)")
    p.add_argument("--committed", action="store_true",
                   help="read only the files git tracks under --memory and --reports, as a clean clone has them")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out differs from the page made now")
    a = p.parse_args(argv)
    at = lambda v, default: ROOT / default if v is None else Path(v)  # noqa: E731  defaults: from any working directory
    memory, reports = at(a.memory, "memory_bank"), at(a.reports, "reports")
    a.memory, a.reports = a.memory or "memory_bank", a.reports or "reports"          # as the page names them
    for flag, folder in (("--memory", memory), ("--reports", reports)):
        if not folder.is_dir(): raise SystemExit(f"results_page: {flag} {folder}: no such folder")
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        if a.committed:
            memory, reports = committed_copy(memory, Path(tmp) / "memory"), committed_copy(reports, Path(tmp) / "reports")
        text = page(memory, reports, a.committed, a.memory.rstrip("/"), a.reports.rstrip("/"))
    out = at(a.out, "nbs/00e_results.qmd")
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    if a.check:
        same = out.exists() and out.read_text(encoding="utf-8") == text
        print(f"results page: {shown} {'is up to date' if same else 'is stale: run scripts/results_page.py' + (' --committed' if a.committed else '')}")
        return 0 if same else 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"results page: wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
