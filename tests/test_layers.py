"""The layers of issue 34, enforced: ``bench`` imports no framework and no ``adapters.torch|tf`` module at import
time; ``adapters/torch`` and ``adapters/tf`` import ``bench`` downward and never each other; the packages of
``bench`` import each other without a cycle (module-level imports; a function may import lazily)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from conftest import REPO

FRAMEWORK_MODULES = ("torch", "tensorflow", "keras", "monai", "adapters.torch", "adapters.tf", "jax")


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(path: Path, *, top_level_only: bool) -> list[str]:
    """Modules ``path`` imports (``from a import b`` gives ``a`` and ``a.b``), at module level or anywhere."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return found


def _package(module: str) -> str:
    """``bench.tracking.runs`` -> ``bench.tracking``; a module of ``bench`` itself is its own node."""
    return ".".join(module.split(".")[:2])


def test_importing_every_bench_module_imports_no_framework() -> None:
    modules = sorted(_module_name(p) for p in (REPO / "bench").rglob("*.py") if p.name != "__main__.py")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            f"print(sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {FRAMEWORK_MODULES!r})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "[]"


def test_bench_names_adapters_only_through_the_lazy_path() -> None:
    """No ``import adapters...`` anywhere in bench (not even lazily): ``bench.training.frameworks`` reaches a
    framework's adapter by name, with importlib."""
    offenders = {str(p.relative_to(REPO)): name for p in (REPO / "bench").rglob("*.py")
                 for name in _imports(p, top_level_only=False) if name.split(".")[0] == "adapters"}
    assert offenders == {}


def test_adapters_never_import_each_other() -> None:
    for own, other in (("torch", "tf"), ("tf", "torch")):
        for path in (REPO / "adapters" / own).rglob("*.py"):
            names = _imports(path, top_level_only=False)
            assert not [n for n in names if n.startswith(f"adapters.{other}")], path
    for path in (REPO / "adapters").glob("*.py"):  # adapters/ itself holds no code: only torch/ and tf/
        assert not _imports(path, top_level_only=False), path


def test_bench_packages_have_no_import_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in (REPO / "bench").rglob("*.py"):
        source = _package(_module_name(path))
        for name in _imports(path, top_level_only=True):
            target = _package(name)
            if name.startswith("bench.") and target != source:
                graph[source].add(target)

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c]
    assert cycles == []
    # The neutral core's layers point one way: networks <- training <- segmenters/experiment; tracking apart.
    assert not graph["bench.networks"] & {"bench.training", "bench.tracking", "bench.spec", "bench.config"}
    assert not graph["bench.training"] & {"bench.tracking", "bench.spec", "bench.config", "bench.experiment"}
    assert "bench.segmenters" not in graph["bench.spec"]  # the spec is pure data
