"""The atf command, run as a real subprocess."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ATF = [str(Path(sys.executable).parent / "atf")]          # the installed console script


def run(*args, cwd=ROOT, check=True):
    return subprocess.run([*ATF, *args], cwd=cwd, capture_output=True, text=True, check=check, timeout=600)


@pytest.mark.parametrize("cmd", [[], ["datasets"], ["walk-forward"], ["demo"], ["experiment"], ["dashboard"], ["export"], ["serve"]])
def test_help_on_every_command(cmd):
    out = run(*cmd, "--help").stdout
    assert "usage: atf" in out


def test_walk_forward_from_config_writes_report(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\ndata: {dataset: us_stocks, assets: [IBM]}\n"
                   "strategy: {fast: [10, 20], slow: [50, 100]}\n"
                   "walk_forward: {train: 730D, validation: 365D, test: 365D}\n"
                   f"output_dir: {tmp_path}\n")
    res = run("walk-forward", str(cfg), "--run-id", "r1", "-q", "--no-tearsheet")
    out = tmp_path / "r1"
    assert f"report: {(out / 'report.html').resolve()}" in res.stdout
    html = (out / "report_IBM.html").read_text()
    assert "plotly" in html and "Walk-forward folds" in html
    m = pd.read_csv(out / "metrics.csv", index_col=0, header=[0, 1])
    assert m.loc["n_bars", ("IBM", "strategy")] == m.loc["n_bars", ("IBM", "buy_and_hold")] > 2000
    meta = json.loads((out / "run.json").read_text())
    assert meta["run_id"] == "r1" and len(meta["config_hash"]) == 12


def test_bad_config_fails_fast_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: t\ncosts: {fee_bsp: 3}\n")
    res = run("walk-forward", str(cfg), check=False)
    assert res.returncode == 2 and "costs.fee_bsp" in res.stderr


def test_datasets_lists_the_registry_with_spans_and_descriptions():
    out = run("datasets").stdout
    assert "sp500_stocks" in out and "btc_15m" in out and "XOM" in out                   # every asset of every dataset
    assert "1990-01-02..2022-12-28" in out and "S&P 500 index level" in out             # span and description


def test_version():
    import atf
    assert run("--version").stdout.strip() == f"atf {atf.__version__}"


def test_demo_runs_from_a_subfolder_into_the_project_reports():
    "`atf demo` from tests/ finds the project root (settings.ini): its configs/demo.yaml and its reports/."
    run_id = f"test-demo-{uuid.uuid4().hex[:8]}"
    try:
        res = run("demo", "--run-id", run_id, "-q", "--no-tearsheet", cwd=ROOT / "tests")
        assert f"report: {ROOT / 'reports' / run_id / 'report.html'}" in res.stdout
        assert (ROOT / "reports" / run_id / "metrics.csv").is_file() and not (ROOT / "tests" / "reports").exists()
    finally:
        shutil.rmtree(ROOT / "reports" / run_id, ignore_errors=True)


def test_dashboard_refuses_a_missing_storage_in_one_line(tmp_path):
    (tmp_path / "settings.ini").write_text("[DEFAULT]\n")                # an empty project: no run folder yet
    for args, message in [(["dashboard"], f"no run folder with optuna.db under {tmp_path / 'reports'}"),
                          (["dashboard", "no.db"], "no.db: no such Optuna storage (nothing created)"),
                          (["dashboard", "sqlite:///no.db"], "no.db: no such Optuna storage (nothing created)")]:
        res = run(*args, cwd=tmp_path, check=False)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.ini"]      # nothing created


def _descendants(pid: int) -> set[int]:
    "Every live process under `pid`, from /proc."
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try: fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError: continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop(); kids = {c for c, pp in parent.items() if pp == p}; found |= kids; todo += kids
    return found


def test_dashboard_serves_the_newest_run_and_stops_with_sigterm(tmp_path):
    "No argument: the newest run folder's studies; SIGTERM to `atf dashboard` alone stops the server (no child left)."
    import httpx
    from atf.tuning import tune
    (tmp_path / "settings.ini").write_text("[DEFAULT]\n"); (tmp_path / "nbs").mkdir()
    for run_id in ["old-run", "new-run"]:
        (tmp_path / "reports" / run_id).mkdir(parents=True)
        tune(lambda p, r: p["x"], {"x": {"type": "float", "low": 0, "high": 1}}, n_trials=2,
             storage=f"sqlite:///{tmp_path / 'reports' / run_id / 'optuna.db'}", study_name=f"{run_id}-study")
        time.sleep(0.05)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    proc = subprocess.Popen([*ATF, "dashboard", "--port", str(port)], cwd=tmp_path / "nbs",     # from a subfolder
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/studies"
    try:
        deadline, res = time.time() + 60, None
        while time.time() < deadline and res is None and proc.poll() is None:
            try: res = httpx.get(url, timeout=2)
            except httpx.HTTPError: time.sleep(0.3)
        assert res is not None and res.status_code == 200, proc.stdout.read1(4000) if proc.poll() is not None else "no answer"
        assert [s["study_name"] for s in res.json()["study_summaries"]] == ["new-run-study"]
        family = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)                                  # the atf process only, not its group
        proc.wait(timeout=20)
        with pytest.raises(httpx.ConnectError): httpx.get(url, timeout=2)
        assert [p for p in family if Path(f"/proc/{p}").exists()] == []   # no server process left behind
    finally:
        try: os.killpg(proc.pid, signal.SIGKILL)                          # whatever is left of its session
        except ProcessLookupError: pass


def test_git_commit_publishes_only_its_run_and_a_finished_run_id_is_refused(tmp_path):
    "--git-commit commits HEAD's runs.jsonl plus that run's line (the file on disk keeps every run); a finished run id is one line."
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    git("init", "-q"); git("config", "user.email", "t@example.com"); git("config", "user.name", "t")
    (tmp_path / ".gitignore").write_text("reports/\nmemory_bank/\n")
    git("add", ".gitignore"); git("commit", "-q", "-m", "start")
    (tmp_path / "c.yaml").write_text(
        "name: g\ndata: {dataset: us_stocks, assets: [IBM], start: '2006-01-01', end: '2010-12-31'}\n"
        "model: {name: mlp, window: 5, params: {hidden: 8}}\ntrain: {max_epochs: 1, batch_size: 128}\n"
        "search_space: {lr: [0.003]}\ntuning: {n_trials: 1}\nwalk_forward: {train: 500, validation: 150, test: 250}\n"
        "output_dir: reports\nmemory_bank: memory_bank\ntearsheet: false\n")
    run("experiment", "c.yaml", "--run-id", "local", "-q", cwd=tmp_path)
    run("experiment", "c.yaml", "--run-id", "shared", "-q", "--git-commit", cwd=tmp_path)
    committed = git("show", "HEAD:memory_bank/runs.jsonl").splitlines()
    assert [json.loads(l)["run_id"] for l in committed] == ["shared"]
    on_disk = (tmp_path / "memory_bank" / "runs.jsonl").read_text().splitlines()
    assert [json.loads(l)["run_id"] for l in on_disk] == ["local", "shared"] and committed[0] in on_disk
    assert git("show", "--name-only", "--format=", "HEAD").split() == ["memory_bank/runs.jsonl", "memory_bank/runs/shared.md"]

    again = run("experiment", "c.yaml", "--run-id", "local", "-q", cwd=tmp_path, check=False)
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-2000:]
    line = again.stderr.strip().splitlines()[-1]
    assert line.startswith("atf experiment: error: ") and "reports/local already holds a finished run" in line
    assert "--run-id" in line
