"""The package's layout holds as ARCHITECTURE.md draws it: no import cycle between recursa's
modules, and no module reaching into another's private names or private modules. Every import
counts, at any level (function-level imports included), read from the source with `ast`, so a
cycle hidden inside a function shows as well as one at the top of a file."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import recursa

PACKAGE = Path(recursa.__file__).resolve().parent


@dataclass(frozen=True)
class Import:
    """One import of a module of the package by another (`name`: the name taken from it)."""

    importer: str
    target: str
    name: str | None
    where: str


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` as written, for a chain of names; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (head := _dotted(node.value)):
        return f"{head}.{node.attr}"
    return None


def _imports_in(module: str, path: Path, known: dict[str, Path], root: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    where = path.relative_to(root)
    bound: dict[str, str] = {}  # a local name -> the module of the package it stands for
    for node in ast.walk(tree):
        at = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
                target = next((p for p in prefixes if p in known), None)
                if target is not None:
                    bound[alias.asname or parts[0]] = target if alias.asname else parts[0]
                    yield Import(module, target, None, at)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:
                    bound[alias.asname or alias.name] = submodule
                    yield Import(module, submodule, None, at)
                elif source in known:
                    yield Import(module, source, alias.name, at)
    for node in ast.walk(tree):  # `module._name` through a module imported above
        if isinstance(node, ast.Attribute) and _private(node.attr):
            written = _dotted(node.value) or ""
            head, _, rest = written.partition(".")
            target = bound.get(head, "") + (f".{rest}" if rest else "")
            if target in known:
                yield Import(module, target, node.attr, f"{where}:{node.lineno}")


def all_imports(package: Path) -> list[Import]:
    """Every import between two different modules of the package."""
    known = modules(package)
    return [
        found
        for module, path in known.items()
        for found in _imports_in(module, path, known, package.parent)
        if found.target != module
    ]


def cycles(found: list[Import]) -> list[list[str]]:
    """The strongly connected groups of two or more modules (Tarjan). A module's import of
    its own packages is no edge: their `__init__` has run before it anyway."""
    graph: dict[str, set[str]] = {}
    for one in found:
        graph.setdefault(one.target, set())
        if not one.importer.startswith(one.target + "."):
            graph.setdefault(one.importer, set()).add(one.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (top := stack.pop()) != node:
                group.append(top)
            group.append(node)
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def private_reaches(found: list[Import]) -> list[Import]:
    """Imports of a private name, or of a module with a private part in its name."""
    return [
        one
        for one in found
        if (one.name is not None and _private(one.name))
        or any(_private(part) for part in one.target.split("."))
    ]


def _cycle_report(groups: list[list[str]], found: list[Import]) -> str:
    lines = []
    for group in groups:
        lines.append("cycle: " + ", ".join(group))
        members = set(group)
        edges = sorted(
            {
                (one.importer, one.target, one.where)
                for one in found
                if one.importer in members
                and one.target in members
                and not one.importer.startswith(one.target + ".")
            }
        )
        lines += [f"  {a} -> {b} ({at})" for a, b, at in edges]
    return "\n".join(lines)


def _private_report(reaches: list[Import]) -> str:
    return "\n".join(
        f"  {one.importer} takes {one.target}{'.' + one.name if one.name else ''} ({one.where})"
        for one in sorted(reaches, key=lambda one: (one.importer, one.where, one.name or ""))
    )


def test_no_import_cycle_between_recursa_modules() -> None:
    found = all_imports(PACKAGE)
    groups = cycles(found)
    assert not groups, "import cycles in recursa:\n" + _cycle_report(groups, found)


def test_no_recursa_module_imports_a_private_name_of_another() -> None:
    reaches = private_reaches(all_imports(PACKAGE))
    assert not reaches, "private names taken across modules:\n" + _private_report(reaches)


def test_the_checks_see_a_cycle_inside_a_function_and_every_private_reach(tmp_path: Path) -> None:
    """A made-up package with one of each fault, so the checks above cannot pass by seeing
    nothing: a cycle closed by a function-level import, a private name, a private module,
    a private attribute of an imported module; and the forms that are allowed."""
    pkg = tmp_path / "made"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import run\n",
        "a.py": "from . import b\n\ndef run():\n    return b.go()\n",
        "b.py": "import re\nfrom re import _parser\n\ndef go():\n    from .a import run\n"
        "    return run\n",
        "c.py": "from __future__ import annotations\nfrom .a import _helper\n"
        "from . import _hidden\nfrom .sub import d\nimport made.sub\n"
        "x = d._inner, made.sub.d._deep, made.sub.__doc__\n",
        "_hidden.py": "",
        "sub/__init__.py": "",
        "sub/d.py": "from .. import a\nfrom made import c\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)

    found = all_imports(pkg)

    assert cycles(found) == [["made.a", "made.b"], ["made.c", "made.sub.d"]]
    assert {(one.importer, one.target, one.name) for one in private_reaches(found)} == {
        ("made.c", "made.a", "_helper"),
        ("made.c", "made._hidden", None),
        ("made.c", "made.sub.d", "_inner"),
        ("made.c", "made.sub.d", "_deep"),
    }
