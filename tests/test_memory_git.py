"""atf.memory.commit_summary against real git: concurrent writers both land, an operation in progress is refused."""
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from atf.memory import commit_summary


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "t@example.com"); git(tmp_path, "config", "user.name", "t")
    (tmp_path / "README.md").write_text("x\n"); git(tmp_path, "add", "README.md"); git(tmp_path, "commit", "-qm", "init")
    return tmp_path


def summary(repo: Path, run: str) -> Path:
    p = repo / "runs" / f"{run}.md"; p.parent.mkdir(exist_ok=True); p.write_text(f"# {run}\n")
    return p


def test_summaries_committed_at_once_all_land(repo):
    "Eight writers at once: each commit keeps the others' files (HEAD moves by compare-and-swap, never blindly)."
    runs = [f"r{i}" for i in range(8)]
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda r: commit_summary([summary(repo, r)], f"run {r}", repo), runs))
    tree = git(repo, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert {f"runs/{r}.md" for r in runs} <= set(tree), tree
    assert len(git(repo, "rev-list", "HEAD").split()) == 9


def test_a_merge_in_progress_is_refused_and_left_as_it_was(repo):
    git(repo, "checkout", "-qb", "other"); (repo / "README.md").write_text("other\n"); git(repo, "commit", "-qam", "o")
    git(repo, "checkout", "-q", "main"); (repo / "README.md").write_text("main\n"); git(repo, "commit", "-qam", "m")
    subprocess.run(["git", "merge", "other"], cwd=repo, capture_output=True)       # conflicts
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(RuntimeError, match="merge is in progress"):
        commit_summary([summary(repo, "x")], "run x", repo)
    assert git(repo, "rev-parse", "HEAD") == head and (repo / ".git" / "MERGE_HEAD").exists()


def test_only_this_runs_line_is_published(repo):
    jl = repo / "runs.jsonl"
    jl.write_text("".join(json.dumps({"run_id": r}) + "\n" for r in ("local", "mine")))
    commit_summary([jl], "run mine", repo, run_id="mine")
    assert git(repo, "show", "HEAD:runs.jsonl") == json.dumps({"run_id": "mine"}) + "\n"
    assert jl.read_text().count("run_id") == 2                                       # the working tree untouched
    with pytest.raises(ValueError, match="nothing to commit"):
        commit_summary([jl], "again", repo, run_id="mine")
