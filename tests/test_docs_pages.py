"""The docs site's pages and order: every page of nbs/ is in the sidebar exactly once, in the guide-then-groups order;
the module map on Get started draws every module of atf/ once and only imports that exist; the commands the guide
pages show are real (the `atf` parser, the Makefile, the config schema); the Results page is exactly what
scripts/results_page.py makes of the committed inputs, and that script reports a real run."""
import ast
import json
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from test_docs_diagrams import check_mermaid

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
GUIDE = ["index.ipynb", "00a_get_started.ipynb", "00b_tuning_workflow.ipynb", "00c_validation_strategy.ipynb",
         "00d_deployment_architecture.ipynb", "00e_results.qmd"]
GROUPS = ["Data", "Research", "Learning", "Deployment"]
RESULTS = NBS / "00e_results.qmd"
SCRIPT = ROOT / "scripts" / "results_page.py"


# ---------------------------------------------------------------- the sidebar
def pages(nbs: Path = NBS) -> list[str]:
    "The pages Quarto renders from nbs/ itself (nbs/workflows/ holds papermill templates, not pages)."
    return sorted(p.name for p in nbs.iterdir() if p.suffix in (".ipynb", ".qmd") and not p.name.startswith(("_", ".")))


def sidebar_entries(contents: list) -> list[str]:
    "Every file a sidebar's contents list names, in order (sections flattened)."
    out = []
    for item in contents:
        if isinstance(item, str): out.append(item)
        elif isinstance(item, dict):
            if "href" in item or "file" in item: out.append(item.get("href") or item.get("file"))
            out += sidebar_entries(item.get("contents") or [])
    return out


def sidebar_problems(text: str, on_disk: list[str]) -> list[str]:
    "What is wrong with a sidebar.yml against the pages on disk, one line each (empty: nothing)."
    try: doc = yaml.safe_load(text)
    except yaml.YAMLError as e: return [f"sidebar.yml is not YAML: {str(e).splitlines()[0]}"]
    contents = ((doc or {}).get("website") or {}).get("sidebar", {}).get("contents") if isinstance(doc, dict) else None
    if not isinstance(contents, list): return ["sidebar.yml has no website.sidebar.contents list"]
    entries = sidebar_entries(contents)
    problems = [f"{e} is listed {n} times" for e, n in sorted(Counter(entries).items()) if n > 1]
    problems += [f"{p} is not in the sidebar" for p in on_disk if p not in entries]
    problems += [f"{e} is in the sidebar but not in nbs/" for e in dict.fromkeys(entries) if e not in on_disk]
    if entries[:len(GUIDE)] != GUIDE: problems.append(f"the sidebar does not start with {GUIDE}")
    sections = [c.get("section") for c in contents if isinstance(c, dict) and "section" in c]
    if sections != GROUPS: problems.append(f"sections {sections}, expected {GROUPS}")
    return problems


def sidebar() -> dict:
    return yaml.safe_load((NBS / "sidebar.yml").read_text())


def test_every_page_is_in_the_sidebar_exactly_once_in_order():
    assert len(pages()) >= 30 and "00e_results.qmd" in pages()
    assert sidebar_problems((NBS / "sidebar.yml").read_text(), pages()) == []


def test_nbdev_keeps_the_custom_sidebar():
    from nbdev.config import get_config
    assert get_config().custom_sidebar, "settings.ini: custom_sidebar must be True, or nbdev_docs overwrites nbs/sidebar.yml"


@pytest.mark.parametrize("edit, says", [
    (lambda t: t.replace("      - 00e_results.qmd\n", ""), "00e_results.qmd is not in the sidebar"),
    (lambda t: t.replace("          - 13_tuning.ipynb\n", "          - 13_tuning.ipynb\n          - 13_tuning.ipynb\n"), "listed 2 times"),
    (lambda t: t.replace("01_data.ipynb", "01_dta.ipynb"), "01_dta.ipynb is in the sidebar but not in nbs/"),
    (lambda t: t.replace("section: Research", "section: Misc"), "sections"),
    (lambda t: t.replace("      - 00a_get_started.ipynb\n", "").replace("          - 01_data.ipynb\n", "          - 01_data.ipynb\n          - 00a_get_started.ipynb\n"), "does not start with"),
    (lambda t: t.replace("contents:", "contents: [", 1), "not YAML"),
    (lambda t: "website: {}\n", "no website.sidebar.contents"),
])
def test_a_broken_sidebar_fails_the_check(edit, says):
    problems = sidebar_problems(edit((NBS / "sidebar.yml").read_text()), pages())
    assert any(says in p for p in problems), problems


def test_a_new_page_missing_from_the_sidebar_fails_the_check():
    assert sidebar_problems((NBS / "sidebar.yml").read_text(), pages() + ["20_new.ipynb"]) == ["20_new.ipynb is not in the sidebar"]


# ---------------------------------------------------------------- the module map
def notebook_markdown(name: str) -> str:
    return "\n\n".join("".join(c["source"]) for c in json.loads((NBS / name).read_text())["cells"] if c["cell_type"] == "markdown")


def mermaid_blocks(text: str) -> list[str]:
    return re.findall(r"```\{mermaid\}\n(.*?)```", text, re.S)


def modules() -> dict[str, set[str]]:
    "Every module of atf/ (packages' empty __init__ aside) -> the atf modules it imports."
    found = {}
    for p in sorted((ROOT / "atf").rglob("*.py")):
        if p.name == "_modidx.py": continue
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        package = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and n.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - n.level + 1])
                deps |= {f"{base}.{n.module}"} if n.module else {f"{base}.{a.name}" for a in n.names}
            elif isinstance(n, ast.ImportFrom) and (n.module or "").startswith("atf"): deps.add(n.module)
            elif isinstance(n, ast.Import): deps |= {a.name for a in n.names if a.name.startswith("atf")}
        if p.name != "__init__.py" or any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.parse(p.read_text()).body):
            found[name] = deps
    return found


def module_map() -> tuple[dict[str, str], dict[str, str], list[tuple[str, str]]]:
    "The Get started diagram: node id -> module, module -> group (top-level subgraph title), and its arrows (from, to)."
    blocks = [b for b in mermaid_blocks(notebook_markdown("00a_get_started.ipynb")) if "atf.data" in b]
    assert len(blocks) == 1, "one module map on Get started"
    nodes, group, edges, depth, top = {}, {}, [], 0, None
    for line in (l.strip() for l in blocks[0].splitlines()):
        if m := re.match(r'subgraph \w+\["([^"]+)"\]', line):
            depth += 1
            if depth == 1: top = m.group(1)
        elif line == "end": depth -= 1
        elif m := re.fullmatch(r'(\w+)\["(atf[\w.]*)"\]', line):
            assert m.group(1) not in nodes, f"node {m.group(1)} drawn twice"
            nodes[m.group(1)], group[m.group(2)] = m.group(2), top
        elif "-->" in line:
            steps = [[x.strip() for x in part.split("&")] for part in line.split("-->")]
            edges += [(a, b) for left, right in zip(steps, steps[1:]) for a in left for b in right]
    return nodes, group, edges


def test_the_module_map_draws_every_module_once_in_its_group():
    nodes, group, _ = module_map()
    drawn = Counter(nodes.values())
    assert not [m for m, n in drawn.items() if n > 1], f"drawn twice: {[m for m, n in drawn.items() if n > 1]}"
    assert set(drawn) == set(modules()), f"missing: {sorted(set(modules()) - set(drawn))}, not in atf/: {sorted(set(drawn) - set(modules()))}"
    assert set(group.values()) == set(GROUPS)


def test_every_arrow_of_the_module_map_is_an_import():
    nodes, _, edges = module_map()
    imports = modules()
    assert len(edges) >= 40
    assert not {x for e in edges for x in e} - set(nodes), f"arrows to undrawn nodes: {sorted({x for e in edges for x in e} - set(nodes))}"
    wrong = [f"{nodes[a]} --> {nodes[b]}" for a, b in edges
             if not any(d == nodes[a] or d.startswith(nodes[a] + ".") for d in imports[nodes[b]])]
    assert not wrong, f"arrows with no import behind them: {wrong}"


def test_the_sidebar_groups_the_chapters_as_the_module_map_does():
    _, group, _ = module_map()
    for section in (c for c in sidebar()["website"]["sidebar"]["contents"] if isinstance(c, dict)):
        for page in section["contents"]:
            code = "\n".join("".join(c["source"]) for c in json.loads((NBS / page).read_text())["cells"] if c["cell_type"] == "code")
            module = "atf." + re.search(r"#\|\s*default_exp\s+(\S+)", code).group(1)
            assert group[module] == section["section"], (page, module, group[module], section["section"])


# ---------------------------------------------------------------- diagrams and commands of the guide pages
@pytest.mark.parametrize("page", ["00a_get_started.ipynb", "00b_tuning_workflow.ipynb"])
def test_the_guide_pages_diagrams_parse(page):
    blocks = mermaid_blocks(notebook_markdown(page))
    assert blocks
    for b in blocks: assert not check_mermaid(b), check_mermaid(b)


# Quarto draws a mermaid diagram only from a ```{mermaid} fence; a plain ```mermaid fence shows as source text
# (quarto-dev/quarto#445). These pages still use the plain fence: remove a page from the set once it is fixed.
PLAIN_FENCES: set[str] = set()   # pages whose diagrams Quarto would show as source text (```mermaid instead of ```{mermaid})


def test_diagrams_use_the_fence_quarto_renders():
    plain = {p.name for p in NBS.rglob("*.ipynb") if re.search(r"```mermaid\n", notebook_markdown(p.relative_to(NBS)))}
    plain |= {p.name for p in NBS.rglob("*.qmd") if "```mermaid\n" in p.read_text()}
    assert plain == PLAIN_FENCES, f"new plain fences: {sorted(plain - PLAIN_FENCES)}; fixed (drop from PLAIN_FENCES): {sorted(PLAIN_FENCES - plain)}"


def shell_commands(text: str) -> list[list[str]]:
    "The commands of every ```bash block: continuation lines joined, comments and leading VAR=value dropped."
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]): words = words[1:]
            if words: out.append(words)
    return out


def command_problem(words: list[str]) -> str | None:
    "Why an `atf ...` or `make ...` command would not run as written (None: it parses)."
    from atf.cli import build_parser
    if words[0] == "atf":
        try: build_parser().parse_args(words[1:])
        except SystemExit as e:
            if e.code: return f"atf rejects {shlex.join(words)}"
        return None
    if words[0] == "make":
        targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
        return None if words[1] in targets else f"no Makefile target {words[1]}"
    return None


@pytest.mark.parametrize("page", ["00a_get_started.ipynb", "00b_tuning_workflow.ipynb"])
def test_the_commands_shown_are_real(page, capsys):
    commands = [w for w in shell_commands(notebook_markdown(page)) if w[0] in ("atf", "make")]
    assert len(commands) >= (12 if page.startswith("00a") else 4)
    assert [c for c in commands if command_problem(c)] == []


@pytest.mark.parametrize("words", [["atf", "experimnt", "c.yaml"], ["atf", "dashboard", "--prot", "1"], ["make", "demos"],
                                   ["atf", "serve"]])
def test_a_command_that_does_not_exist_is_caught(words, capsys):
    assert command_problem(words)


def yaml_blocks(page: str) -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", notebook_markdown(page), re.S)]


def test_the_config_snippets_are_valid():
    from atf.config import DataConfig
    from atf.experiments import check_scale, load_experiment
    from atf.tuning import check_space
    blocks = yaml_blocks("00a_get_started.ipynb") + yaml_blocks("00b_tuning_workflow.ipynb")
    assert {k for b in blocks for k in b} >= {"data", "search_space", "tuning", "execution"}
    base = yaml.safe_load((ROOT / "configs" / "experiment_lstm.yaml").read_text())
    for b in blocks:
        if "data" in b: DataConfig(**b["data"])                           # a TypeError names an unknown key
        if "search_space" in b: check_space(b["search_space"])
        if "tuning" in b or "execution" in b:
            cfg = {**base, "tuning": {**base["tuning"], **b.get("tuning", {})}, **({"execution": b["execution"]} if "execution" in b else {})}
            check_scale(load_experiment(cfg))


# ---------------------------------------------------------------- the Results page
def results_page(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True)


def test_the_results_page_is_what_the_script_makes_of_the_committed_inputs(tmp_path):
    r = results_page("--committed", "--out", str(tmp_path / "page.qmd"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "page.qmd").read_bytes() == RESULTS.read_bytes(), "nbs/00e_results.qmd is stale: run scripts/results_page.py --committed"
    assert results_page("--committed", "--check").returncode == 0


def test_the_check_finds_a_stale_page(tmp_path):
    (tmp_path / "page.qmd").write_text(RESULTS.read_text() + "hand edit\n")
    r = results_page("--committed", "--check", "--out", str(tmp_path / "page.qmd"))
    assert r.returncode == 1 and "stale" in r.stdout


def test_the_script_explains_itself_and_names_a_wrong_folder(tmp_path):
    r = results_page("--help")
    assert r.returncode == 0 and "--committed" in r.stdout and "--memory" in r.stdout
    r = results_page("--reports", str(tmp_path / "reprots"), "--out", str(tmp_path / "p.qmd"))
    assert r.returncode == 1 and r.stderr.strip() == f"results_page: --reports {tmp_path / 'reprots'}: no such folder"


def test_committed_reads_only_what_git_tracks(tmp_path):
    "A tracked summary is read, an ignored one is not (a clean clone has only the first)."
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / ".gitignore").write_text("memory_bank/runs.jsonl\n")
    bank = tmp_path / "memory_bank"
    bank.mkdir(); (tmp_path / "reports").mkdir()
    line = {"run_id": "kept-run", "kind": "experiment", "recorded": "2026-01-02T03:04:05+00:00", "model": "mlp",
            "oos_sharpe": {"X_native": {"model": 0.5, "logistic": 0.25, "buy_and_hold": 0.75}}}
    (bank / "runs.jsonl").write_text(json.dumps(line) + "\n")
    git("add", "-f", "memory_bank/runs.jsonl")
    (bank / "runs.jsonl").write_text(json.dumps(line) + "\n" + json.dumps({**line, "run_id": "local-only"}) + "\n")
    r = results_page("--committed", "--memory", "memory_bank", "--reports", "reports", "--out", "page.qmd", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "page.qmd").read_text()
    assert "kept-run" in page and "local-only" not in page and "| 0.500 | 0.250 | 0.750 |" in page
    r = results_page("--memory", "memory_bank", "--reports", "reports", "--out", "all.qmd", cwd=tmp_path)
    assert "local-only" in (tmp_path / "all.qmd").read_text()


def test_the_page_reports_a_real_run(tmp_path):
    "A tiny real experiment: its config, Sharpe against the baselines, best parameters per fold and luck verdict are on the page, byte-stable."
    from conftest import _tiny_run
    bank = tmp_path / "memory_bank"
    run = _tiny_run(tmp_path / "reports", "page-run", {"name": "logistic", "window": 1},
                    {"search_space": {"C": [0.1, 1.0]}, "tuning": {"n_trials": 2}, "memory_bank": str(bank)})
    args = ["--memory", str(bank), "--reports", str(tmp_path / "reports")]
    assert results_page(*args, "--out", str(tmp_path / "a.qmd")).returncode == 0
    assert results_page(*args, "--out", str(tmp_path / "b.qmd")).returncode == 0
    page = (tmp_path / "a.qmd").read_text()
    assert page == (tmp_path / "b.qmd").read_text()
    info = json.loads((run / "run.json").read_text())
    for key, s in info["oos_sharpe"].items():
        assert f"| page-run | experiment | logistic | {key} | {s['model']:.3f} | {s['logistic']:.3f} | {s['buy_and_hold']:.3f} |" in page
        assert info["luck"][key]["verdict"] in page
    assert "| model | logistic (window 1, params -) |" in page and "summary in the memory bank" in page
    folds = __import__("pandas").read_csv(run / "folds.csv")
    for p in folds["best_params"]: assert ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in json.loads(p).items()) in page
    assert str(tmp_path) not in page.replace(f"`{bank}/`", "").replace(f"`{tmp_path / 'reports'}/`", "")   # no path but the inputs named
