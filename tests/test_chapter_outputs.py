"""The chapters' stored outputs (what the docs pages show) are present, small and stable. No notebook is executed here:
`scripts/execute_chapters.py --check` is the freshness check that re-executes them."""
import copy
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("execute_chapters", ROOT / "scripts" / "execute_chapters.py")
ec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ec)

CHAPTERS = ec.chapters()


def _load(p: Path) -> dict:
    return json.loads(p.read_text())


def _outputs(nb: dict) -> list[dict]:
    return [o for c in nb["cells"] if c.get("cell_type") == "code" for o in c.get("outputs", [])]


def test_the_chapters_are_found():
    names = {p.name for p in CHAPTERS}
    assert {"01_data.ipynb", "05_backtest.ipynb", "19e_serving_cli.ipynb"} <= names
    assert not any(n.startswith("00") for n in names)
    assert set(ec.EXEMPT) <= names, f"exempt chapters that do not exist: {set(ec.EXEMPT) - names}"
    assert all(reason.strip() for reason in ec.EXEMPT.values()), "every exempt chapter needs a reason"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_outputs_are_clean_small_and_present(nb_path):
    nb = _load(nb_path)
    assert ec.lint(nb, nb_path) == []
    if nb_path.name in ec.EXEMPT:
        assert not _outputs(nb), f"{nb_path.name} is exempt ({ec.EXEMPT[nb_path.name]}) but stores outputs"
    else:
        assert _outputs(nb), f"{nb_path.name} stores no output: run scripts/execute_chapters.py {nb_path.name}"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_nbdev_clean_keeps_the_outputs(nb_path):
    "The committed chapter is what nbdev_clean (make export) leaves: its outputs survive, nothing else changes."
    from nbdev.clean import clean_nb
    from nbdev.config import get_config

    cfg = get_config()
    nb = _load(nb_path)
    cleaned = copy.deepcopy(nb)
    clean_nb(cleaned, clear_all=cfg.get("clear_all", False) in (True, "True"),
             allowed_cell_metadata_keys=cfg.get("allowed_cell_metadata_keys", "").split())
    assert _outputs(cleaned) == _outputs(nb)
    assert cleaned == nb, f"{nb_path.name} is not nbdev_clean-clean: run nbdev_clean --fname nbs/{nb_path.name}"


def _bad_notebook() -> dict:
    def code(src, outputs):
        return {"cell_type": "code", "execution_count": None, "id": "x", "metadata": {}, "outputs": outputs,
                "source": [src]}

    stream = lambda text, name="stdout": {"output_type": "stream", "name": name, "text": [text]}  # noqa: E731
    return {"cells": [
        code("print(path)", [stream("wrote /tmp/tmpab12cd/run.json\n")]),
        code("obj", [{"output_type": "execute_result", "execution_count": None, "metadata": {},
                      "data": {"text/plain": ["<atf.Model object at 0x7f3a2b1c9d50>"]}}]),
        code("train()", [stream("\r 40%|████      | 4/10 [00:01<00:02]", "stderr")]),
        code("1/0", [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
                      "traceback": ["Traceback (most recent call last):", "ZeroDivisionError"]}]),
        code("fig", [{"output_type": "display_data", "metadata": {},
                      "data": {"application/vnd.plotly.v1+json": {"data": []}, "text/plain": ["Figure"]}}]),
        code("big", [stream("x" * (ec.MAX_OUTPUT + 10))]),
        code("r", [{"output_type": "execute_result", "execution_count": None, "metadata": {},
                    "data": {"text/plain": ["{'model': 'primary',\n", " 'latency_ms': 30.049}"]}}]),
        code("fit()", [stream("epoch 2/2 done in 1.27 s\n")]),
        code("bench()", [stream("p99 of /predict: 4 ms\n")]),
        code("tune()", [stream("the search took 3 minutes\n")]),
        code("ok", [stream("Sharpe 1.23 over 250 bars, window 5, timeout_s 1\n")]),
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


OK = 10  # the index of the one clean cell of _bad_notebook()


def test_the_checker_flags_a_bad_notebook():
    problems = "\n".join(ec.lint(_bad_notebook(), ROOT / "nbs" / "99_bad.ipynb"))
    for expected in ("cell 0 ('print(path)'): an output prints a temp or machine path",
                     "cell 1 ('obj'): an output prints a memory address",
                     "cell 2 ('train()'): stores stderr",
                     "cell 2 ('train()'): an output prints a carriage-return progress bar",
                     "cell 3 ('1/0'): stores an error output (ZeroDivisionError)",
                     "cell 4 ('fig'): stores a plotly mime bundle",
                     f"cell 5 ('big'): an output of {ec.output_size(_bad_notebook()['cells'][5]['outputs'][0])} bytes is over",
                     "cell 6 ('r'): an output prints a timing",
                     "cell 7 ('fit()'): an output prints a timing",
                     "cell 8 ('bench()'): an output prints a timing",
                     "cell 9 ('tune()'): an output prints a timing"):
        assert expected in problems, f"not flagged: {expected}\n{problems}"
    assert f"cell {OK}" not in problems


def test_normalise_drops_what_lint_flags(tmp_path):
    p = tmp_path / "99_bad.ipynb"
    p.write_text(json.dumps(_bad_notebook()))
    notes = ec.normalise(p, p)
    nb = _load(p)
    assert ec.lint(nb, p) == []
    assert [c["outputs"] and c["outputs"][0].get("text") for c in nb["cells"]][OK] == \
        ["Sharpe 1.23 over 250 bars, window 5, timeout_s 1\n"]
    assert sum(bool(c["outputs"]) for c in nb["cells"]) == 1
    assert len(notes) == 10 and all(str(p) in n for n in notes)
    assert sum("dropped an output that prints a timing" in n for n in notes) == 4


def test_the_freshness_check_names_a_stale_cell():
    committed = _bad_notebook()
    fresh = copy.deepcopy(committed)
    fresh["cells"][OK]["outputs"][0]["text"] = ["Sharpe 1.25 over 250 bars, window 5, timeout_s 1\n"]
    errors = ec.compare(committed, fresh, ROOT / "nbs" / "99_bad.ipynb")
    assert len(errors) == 1 and f"nbs/99_bad.ipynb cell {OK} ('ok')" in errors[0]
    assert "-Sharpe 1.23" in errors[0] and "+Sharpe 1.25" in errors[0]
    # images are compared only by kind: new pixels of the same figure are not stale
    img = lambda b64: {"output_type": "display_data", "metadata": {},  # noqa: E731
                       "data": {"image/png": b64, "text/plain": ["<Figure size 640x480 with 1 Axes>"]}}
    committed["cells"][OK]["outputs"] = [img("AAAA")]
    fresh["cells"][OK]["outputs"] = [img("BBBB")]
    assert ec.compare(committed, fresh, ROOT / "nbs" / "99_bad.ipynb") == []
    fresh["cells"][OK]["outputs"] = []
    assert len(ec.compare(committed, fresh, ROOT / "nbs" / "99_bad.ipynb")) == 1


@pytest.mark.parametrize("committed, fresh, same", [
    ("[0.5156552791595459, 0.4843446910381317]", "[0.5156552801595459, 0.4843446900381317]", True),  # 1e-9: CPUs differ
    ("max |onnx - torch| 1.19e-08", "max |onnx - torch| 2.4e-08", True),     # parity noise under the absolute 1e-6
    ("max |onnx - torch| 1.19e-08", "max |onnx - torch| 3.1e-06", False),
    ("accuracy 0.81", "accuracy 0.79", False),                               # a real change
    ("Sharpe 1.2340", "Sharpe 1.2352", True),                                # relative 1e-3
    ("Sharpe 1.2340", "Sharpe 1.2360", False),
    ("250 trades", "251 trades", False),                                     # integers: exactly
    ("5 trials", "5.0 trials", False),
    ("model mlp 0.5", "model lstm 0.5", False),                              # any other text: exactly
    ("signal: -1.0", "signal: 1.0", False),
    ("0  0.123457  IBM", "0  -0.123457e-9  IBM", False),
    ("0   0.000000  IBM", "0  -0.000000  IBM", True),                        # a column widened by a sign
])
def test_the_freshness_check_allows_float_noise_only(committed, fresh, same):
    assert ec.lines_match(committed, fresh) is same
    nb = lambda line: {"cells": [{"cell_type": "code", "execution_count": None, "id": "x", "metadata": {},  # noqa: E731
                                  "source": ["r"], "outputs": [{"output_type": "stream", "name": "stdout",
                                                                "text": [line + "\n"]}]}]}
    errors = ec.compare(nb(committed), nb(fresh), ROOT / "nbs" / "99_bad.ipynb")
    assert (errors == []) is same, errors
