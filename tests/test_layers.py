"""The folders are the layers: no module imports from a layer above its own, and no name hides a submodule."""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import pleat

SRC = Path(pleat.__file__).parent
# what each layer may import from pleat (its own layer included); the CLI is imported by nothing
ALLOWED = {
    "core": {"core"},
    "probes": {"core", "probes"},
    "runs": {"core", "probes", "runs"},
    "integrations": {"core", "probes", "integrations"},
    "reproduce": {"core", "probes", "runs", "reproduce"},
    "__init__": {"core", "probes"},
    "cli": {"", "core", "probes", "runs", "reproduce"},
}


def layer_of(module: str) -> str:
    """pleat.core.select -> core; pleat.cli -> cli; pleat -> '' (the package itself, for __version__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> list[str]:
    """Every pleat module the file imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "pleat"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pleat":
            if node.module == "pleat":  # from pleat import x: x is a submodule or a name of the package root
                found += [f"pleat.{a.name}" if (SRC / a.name).is_dir() else "pleat" for a in node.names]
            else:
                found.append(node.module)
    return found


FILES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_from_a_layer_above_its_own(path):
    rel = path.relative_to(SRC)
    layer = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    assert layer in ALLOWED, f"{rel} is in no layer: put it in core/, probes/, runs/, reproduce/ or integrations/"
    wrong = [m for m in imports(path) if layer_of(m) not in ALLOWED[layer]]
    assert not wrong, f"{rel} ({layer}) imports {wrong}: {layer} may import only {sorted(ALLOWED[layer])}"


def test_the_layering_test_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pleat.runs.train import train\n    from pleat import runs\n")
    assert [layer_of(m) for m in imports(bad)] == ["runs", "runs"]


def test_every_submodule_is_reachable_as_an_attribute():
    """`import pleat.X.Y; pleat.X.Y.name` works: no re-exported function or class shadows a submodule."""
    for info in pkgutil.walk_packages(pleat.__path__, "pleat."):
        if info.name.startswith("pleat.integrations."):
            continue  # they need the hf / lightning extras; their import is tested in test_examples
        module = importlib.import_module(info.name)
        owner = importlib.import_module(info.name.rsplit(".", 1)[0])
        assert getattr(owner, info.name.rsplit(".", 1)[1]) is module, f"{info.name} is hidden by a re-export"


def test_one_vocabulary_across_the_public_functions():
    """The data is `data`, a Hutchinson count `probes`, several subsets `subsets` (docs/reference/api.md)."""
    import inspect

    for name in pleat.__all__:
        obj = getattr(pleat, name)
        if not callable(obj):
            continue
        try:
            params = set(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            continue
        assert not params & {"batches", "hutchinson"}, f"pleat.{name}: {sorted(params)}"
        if "data" in params or "probes" in params:
            assert "generator" in params, f"pleat.{name} draws without a generator= argument"
