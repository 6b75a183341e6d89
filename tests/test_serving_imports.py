"""atf.serving stays out of the training stack. Statically: every atf module reachable from a serving module (imports
inside functions included) is serving, manifest, data, features or strategies, and none imports torch at module level.
At run time: a process that serves an exported model has not imported torch, stable_baselines3, optuna or sklearn."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"atf", "atf.manifest", "atf.data", "atf.features", "atf.strategies"}          # and atf.serving.*
TRAINING = {"atf.trainers", "atf.learners", "atf.experiments", "atf.export", "atf.envs", "atf.models", "atf.tuning"}
HEAVY = {"torch", "stable_baselines3", "optuna", "sklearn", "gymnasium"}


def source_of(module: str) -> Path | None:
    "The file of an atf module or package (None when `module` names no file, e.g. a function)."
    base = ROOT / Path(*module.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file(): return path
    return None


def imported(tree: ast.AST, module: str, package: str) -> set[str]:
    "Every name an import statement anywhere in `tree` refers to, as absolute dotted names."
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                                    # relative: from the package, up level - 1 packages
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names |= {base} | {f"{base}.{a.name}" for a in node.names}    # `from atf.serving import app` is a module too
    return names


def atf_imports(module: str, tree: ast.AST | None = None) -> set[str]:
    "The atf modules `module` imports, and the packages above each (importing a module runs their __init__)."
    path = source_of(module)
    tree = tree or ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = {n for n in imported(tree, module, package) if n.split(".")[0] == "atf" and source_of(n)}
    return found | {".".join(n.split(".")[:i]) for n in found for i in range(1, n.count(".") + 1)}


def closure(roots) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        m = todo.pop()
        if m not in seen: seen.add(m); todo += atf_imports(m) - seen
    return seen


def serving_modules() -> list[str]:
    return sorted(f"atf.serving.{p.stem}" for p in (ROOT / "atf" / "serving").glob("*.py") if p.stem != "__init__")


def top_level_imports(tree: ast.Module) -> set[str]:
    "Top-level packages imported when the module is imported: statements outside function bodies."
    out, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)): continue
        if isinstance(node, ast.Import): out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level: out.add((node.module or "").split(".")[0])
        todo += list(ast.iter_child_nodes(node))
    return out


def test_the_serving_closure_holds_no_training_module():
    mods = serving_modules()
    assert {"atf.serving.app", "atf.serving.cli", "atf.serving.handle", "atf.serving.schemas"} <= set(mods), mods
    reach = closure(mods)
    bad = sorted(m for m in reach if m not in ALLOWED and not m.startswith("atf.serving"))
    assert not bad, f"atf.serving reaches {bad}"
    assert not {m for m in reach if any(m == t or m.startswith(t + ".") for t in TRAINING)}


def test_no_module_of_the_closure_imports_torch_at_module_level():
    for m in sorted(closure(serving_modules())):
        heavy = top_level_imports(ast.parse(source_of(m).read_text())) & HEAVY
        assert not heavy, f"{m} imports {sorted(heavy)} at module level"


def test_the_check_sees_a_training_import_wherever_it_is():
    "The static check is not vacuous: a training import in a serving module, even inside a function, is found."
    for src in ("from atf.export import export_run", "from ..export import export_run", "import atf.trainers.supervised",
                "def f():\n    from atf.learners import SupervisedLearner", "from atf import experiments"):
        found = atf_imports("atf.serving.app", ast.parse(src))
        assert found & {"atf.export", "atf.trainers.supervised", "atf.learners", "atf.experiments"}, (src, found)
    assert top_level_imports(ast.parse("try:\n    import torch\nexcept ImportError: pass")) == {"torch"}
    assert top_level_imports(ast.parse("def f():\n    import torch")) == set()


def test_serving_never_imports_torch(exported):
    "A process that builds the app on an exported model (and imports the command) has no training package loaded."
    code = ("import sys; from atf.serving.app import ServeConfig, create_app; import atf.serving.cli; "
            f"svc = create_app(ServeConfig(model_dir={str(exported['mlp']['model'])!r}, no_auth=True)).state.service; "
            "assert svc.primary is not None, svc.primary_error; "
            f"bad = [m for m in {sorted(HEAVY)!r} if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_closure_imports_only_what_the_serving_image_installs():
    "Module-level imports of the serving closure are the standard library, atf, or settings.ini's serve_requirements."
    import configparser
    from importlib.metadata import packages_distributions, requires
    from packaging.requirements import Requirement
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    norm = lambda name: name.lower().replace("_", "-")
    image, todo = set(), [norm(r) for r in cfg["DEFAULT"]["serve_requirements"].split()]
    while todo:                                  # what pip installs for them: their dependencies, without extras
        name = todo.pop()
        if name in image: continue
        image.add(name)
        for req in map(Requirement, requires(name) or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}): todo.append(norm(req.name))
    dists = packages_distributions()
    for m in sorted(closure(serving_modules())):
        third = top_level_imports(ast.parse(source_of(m).read_text())) - set(sys.stdlib_module_names) - {"atf", "__future__", ""}
        missing = {p for p in third if not {norm(d) for d in dists.get(p, [p])} & image}
        assert not missing, f"{m} imports {sorted(missing)} at module level; the serving image does not install them"
