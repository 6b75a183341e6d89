"""Every mermaid diagram in the docs (notebooks and .qmd pages) parses, by a light syntax check of the flowchart subset
the docs use: Quarto (which renders them) is not available here, so a broken diagram would only show on the site."""
import json
import re
from pathlib import Path

import pytest

HEADER = re.compile(r"^(flowchart|graph)\s+(TB|TD|BT|RL|LR)$")
SHAPES = [r'\(\[(?:"[^"]*"|[^\]"]*)\]\)', r'\[\[(?:"[^"]*"|[^\]"]*)\]\]', r'\[\((?:"[^"]*"|[^)"]*)\)\]', r'\(\((?:"[^"]*"|[^)"]*)\)\)',
          r'\{\{(?:"[^"]*"|[^}"]*)\}\}', r'\[(?:"[^"]*"|[^\]"]*)\]', r'\((?:"[^"]*"|[^)"]*)\)', r'\{(?:"[^"]*"|[^}"]*)\}',
          r'>(?:"[^"]*"|[^\]"]*)\]']
NODE = rf'[A-Za-z_][\w-]*(?:{"|".join(SHAPES)})?'
ARROW = r'(?:<?(?:-->|---|-\.->|-\.-|==>|===|--[ox]|~~~))(?:\|(?:"[^"]*"|[^|"]*)\|)?'
STATEMENT = re.compile(rf"^{NODE}(?:\s*&\s*{NODE})*(?:\s*{ARROW}\s*{NODE}(?:\s*&\s*{NODE})*)*$")
OTHER = re.compile(r"^(%%.*|end|subgraph\s+\S.*|direction\s+(TB|TD|BT|RL|LR)|classDef\s+\S+\s+\S.*|class\s+\S+\s+\S+|style\s+\S+\s+\S.*|linkStyle\s+.*|click\s+.*)$")


def check_mermaid(text: str) -> list[str]:
    "Problems of one flowchart, each naming its line (empty: it parses)."
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    if not lines or not HEADER.match(lines[0]): return [f"line 1: {lines[0] if lines else ''!r} is not a flowchart header"]
    problems, depth = [], 0
    for n, line in enumerate(lines[1:], 2):
        depth += line.startswith("subgraph") - (line == "end")
        if depth < 0: problems.append(f"line {n}: 'end' without a subgraph")
        if not (STATEMENT.match(line) or OTHER.match(line)): problems.append(f"line {n}: cannot parse {line!r}")
    return problems + ([f"{depth} subgraph(s) not closed"] if depth > 0 else [])


def diagrams() -> list[tuple[str, str]]:
    "(where, text) of every ```mermaid block of nbs/*.ipynb markdown cells and nbs/**/*.qmd pages."
    found = []
    for p in sorted(Path("nbs").rglob("*.ipynb")):
        for k, c in enumerate(json.loads(p.read_text())["cells"]):
            found += [(f"{p} cell {k}", m) for m in re.findall(r"```\{?mermaid\}?\n(.*?)```", "".join(c["source"]), re.S)]
    for p in sorted(Path("nbs").rglob("*.qmd")):
        found += [(str(p), m) for m in re.findall(r"```\{?mermaid\}?\n(.*?)```", p.read_text(), re.S)]
    return found


def test_the_docs_have_diagrams_and_each_parses():
    found = diagrams()
    assert found                                              # the scaling chapter's at least
    for where, text in found: assert not check_mermaid(text), (where, check_mermaid(text))


@pytest.mark.parametrize("bad, says", [
    ("flowchart XY\n  A --> B", "line 1"),
    ("flowchart LR\n  A[\"unclosed --> B", "line 2"),
    ("flowchart LR\n  A -> B", "line 2"),
    ("flowchart LR\n  subgraph S\n  A --> B", "not closed"),
    ("flowchart LR\n  A -->|label B", "line 2"),
])
def test_the_check_finds_broken_diagrams(bad, says):
    assert any(says in p for p in check_mermaid(bad)), check_mermaid(bad)
