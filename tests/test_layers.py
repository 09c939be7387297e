"""The house rules that keep the code navigable, checked on the source itself.

- Imports point one way: commands → stages → (models, captioners, image_check, text,
  fusion, evaluation, training, synth) → artifacts, errors, config. Nothing below
  ``stages/`` imports a stage, a command or the CLI, not even inside a function, and
  the packages below it have no import cycles.
- Every third-party package the code imports is declared in pyproject.toml.
- No module is over 600 lines: a longer one is split along its seams.
"""

from __future__ import annotations

import ast
import collections
import sys
from importlib import metadata
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "urbanln_cli"
TOP = ("commands", "stages", "cli", "__main__")  # the layers allowed to import stages
MAX_LINES = 600


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, optional) for every import in a file; optional = inside `except ImportError`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                if isinstance(handler.type, ast.Name) and handler.type.id in ("ImportError", "ModuleNotFoundError"):
                    optional.update(id(n) for n in ast.walk(handler))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in optional) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in optional))
    return found


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_imports_point_one_way():
    violations = []
    for module, path in _modules().items():
        if _layer(module) in TOP:
            continue
        for target, _ in _imports(path):
            if target.startswith("urbanln_cli.") and _layer(target) in TOP:
                violations.append(f"{module} imports {target}")
    assert violations == []


def test_no_cycles_between_packages_below_the_stages():
    graph = collections.defaultdict(set)
    for module, path in _modules().items():
        source = _layer(module)
        if source in TOP or not source:
            continue
        for target, _ in _imports(path):
            dest = _layer(target) if target.startswith("urbanln_cli.") else ""
            if dest and dest != source and dest not in TOP:
                graph[source].add(dest)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            assert visit(node, []) is None, f"import cycle: {' -> '.join(visit(node, []) or [])}"


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {
        _normal(spec.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip())
        for spec in project["dependencies"]
    }
    providers = metadata.packages_distributions()
    undeclared = set()
    for path in _modules().values():
        for target, optional in _imports(path):
            top = target.split(".")[0]
            if optional or top == "urbanln_cli" or top in sys.stdlib_module_names or top == "__future__":
                continue
            dists = {_normal(d) for d in providers.get(top, [top])}
            if not dists & declared:
                undeclared.add(f"{top} ({', '.join(sorted(dists))})")
    assert sorted(undeclared) == []


def test_no_module_is_over_the_line_limit():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in _modules().values()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these modules (at most {MAX_LINES} lines each): {long}"
