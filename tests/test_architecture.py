"""The house rules, checked on the source: imports flow one way, with no cycle, and modules
and functions stay small.

Imports are read from the source (every `import` and `from ... import`, at module level or
inside a function, since a deferred import is still a dependency), so the check needs
nothing installed beyond the files themselves:
- between packages: tokred_core and tokred_kernels are leaves, tokred_models uses them,
  tokred_train uses models, the app (`tokred`) uses train; nothing points back up;
- inside tokred_train: rooms point down the list in `_TRAIN_ROOMS` (run and eval use
  built_run, model, families, data and config; data never imports families, ...);
- no cycle between modules anywhere.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "tokred_core": ROOT / "packages/tokred-core/src/tokred_core",
    "tokred_kernels": ROOT / "packages/tokred-kernels/src/tokred_kernels",
    "tokred_models": ROOT / "packages/tokred-models/src/tokred_models",
    "tokred_train": ROOT / "packages/tokred-train/src/tokred_train",
    "tokred": ROOT / "apps/tokred/src/tokred",
}
#: What each package may import (besides itself).
_ALLOWED = {
    "tokred_core": set(),
    "tokred_kernels": set(),
    "tokred_models": {"tokred_core", "tokred_kernels"},
    "tokred_train": {"tokred_core", "tokred_kernels", "tokred_models"},
    "tokred": {"tokred_core", "tokred_kernels", "tokred_models", "tokred_train"},
}
#: tokred_train's rooms, lowest first: a room imports only rooms at or below its own.
_TRAIN_ROOMS = [
    ("atomic",),
    ("config",),
    ("data",),
    ("families",),
    ("model",),
    ("built_run",),
    ("run",),
    ("eval",),
    ("study",),
    ("testing",),
]
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
#: Longer than the limits on purpose, each with why (path relative to the repo root).
_LONG_ON_PURPOSE: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for top, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([top, *parts])] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str) -> Iterator[str]:
    """The project modules `module` imports: `from a import b` names a.b when b is a module."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in SOURCES:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] not in SOURCES:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in MODULES else target


def _graph() -> dict[str, set[str]]:
    return {m: {t for t in _imports(m) if t in MODULES and t != m} for m in MODULES}


def _room_rank(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "tokred_train" or len(parts) < 2:
        return None
    for rank, room in enumerate(_TRAIN_ROOMS):
        if parts[1] == room[0]:
            return rank
    raise AssertionError(f"{module}: not in a room of _TRAIN_ROOMS; add its room there")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_package_is_read():
    for top, folder in SOURCES.items():
        assert (folder / "__init__.py").is_file(), top
    assert len(MODULES) > 60


def test_no_import_cycle_between_modules():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_flow_down_between_packages():
    bad = [
        f"{m} imports {t}"
        for m, targets in _graph().items()
        for t in targets
        if t.split(".")[0] != m.split(".")[0] and t.split(".")[0] not in _ALLOWED[m.split(".")[0]]
    ]
    assert bad == []


def test_tokred_train_rooms_import_only_rooms_below():
    bad = []
    for m, targets in _graph().items():
        rank = _room_rank(m)
        if rank is None:
            continue
        for t in targets:
            other = _room_rank(t)
            if other is not None and other > rank:
                bad.append(f"{m} imports {t}")
    assert bad == []


def _long_functions(tree: ast.AST) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                yield node.name, length


def test_modules_and_functions_stay_small():
    too_long = []
    for path in MODULES.values():
        rel = str(path.relative_to(ROOT))
        if rel in _LONG_ON_PURPOSE:
            continue
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {lines} lines")
        too_long += [f"{rel}: {name}() {n} lines" for name, n in _long_functions(ast.parse(text))]
    assert too_long == []


def test_every_exception_to_the_size_rules_says_why_and_exists():
    for rel, why in _LONG_ON_PURPOSE.items():
        assert (ROOT / rel).is_file(), rel
        assert len(why.split()) >= 5, rel
