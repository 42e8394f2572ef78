"""The layout's rules, checked by parsing the source (docs/architecture.md).

Imports run one way, ``envs`` <- ``recsys`` <- ``agents`` <- ``experiments`` (``benchmarks``
and ``tests`` on top), at module level and inside functions alike; no module is over 400
lines. A wrong-direction import fails here with the module, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("envs", "recsys", "agents", "experiments")
ALLOWED = {layer: set(LAYERS[: i + 1]) for i, layer in enumerate(LAYERS)}
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def _project_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, top-level project package, inside a function) of every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                top = name.split(".")[0]
                if top in LAYERS or top in ("benchmarks", "tests"):
                    found.append((child.lineno, top, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _violations() -> list[str]:
    out = []
    for path in _modules():
        layer = path.relative_to(ROOT).parts[0]
        for line, top, in_function in _project_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if top not in ALLOWED[layer]:
                out.append(f"{where}: {layer} imports {top} (allowed: {sorted(ALLOWED[layer])})")
            elif in_function:
                out.append(f"{where}: project import inside a function (move it to the top of the module)")
    return out


def test_imports_run_one_way() -> None:
    assert _violations() == []


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("source, expected", [
    ("from agents.base import Policy\n", "recsys imports agents"),
    ("def f():\n    from recsys.logs import read_logs\n", "inside a function"),
    ("import experiments.run\n", "recsys imports experiments"),
])
def test_checker_catches_wrong_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str,
                                       expected: str) -> None:
    """The checker itself can fail: a planted bad import in a recsys module is reported."""
    fake = tmp_path / "recsys"
    fake.mkdir()
    (fake / "bad.py").write_text(source)
    for layer in LAYERS:
        if layer != "recsys":
            (tmp_path / layer).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = _violations()
    assert len(found) == 1 and expected in found[0]
