"""Every import between kivla's packages points down the floors of docs/architecture.md.

Floors, lowest first: the ground modules (`kivla.io`, `kivla.presets`), data, tokenizers, model,
train, serve, eval, pipelines; `kivla.cli` collects the commands of all. Imports inside functions
count too: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

import kivla

ROOT = Path(kivla.__file__).parent
GROUND = {"io", "presets"}
FLOORS = ["data", "tokenizers", "model", "train", "serve", "eval", "pipelines"]


def imports(path: Path) -> set[str]:
    """The kivla packages / ground modules that a file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "kivla":  # from kivla import io
                names = [f"kivla.{a.name}" for a in node.names]
        found |= {n.split(".")[1] for n in names if n.startswith("kivla.")}
    return found


def test_imports_point_down():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name.endswith("_test.py") or path.name == "conftest.py":
            continue
        parts = path.relative_to(ROOT).parts
        if len(parts) == 1:  # a ground module, or the top-level cli / __main__
            if path.stem in GROUND:
                assert not imports(path), f"{path.name}: a ground module imports kivla"
            continue
        floor = FLOORS.index(parts[0])
        allowed = GROUND | set(FLOORS[: floor + 1])
        upward += [f"{'/'.join(parts)} imports kivla.{p}" for p in sorted(imports(path) - allowed)]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_no_module_imports_back_into_the_backbone_interface_cycle():
    # the factory lives apart from the interface: backbone.py imports no implementation
    text = (ROOT / "model" / "backbone.py").read_text()
    assert "kivla.model.hf" not in text and "def build_backbone" not in text
