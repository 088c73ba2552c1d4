"""The layering rules of the package, read off the imports of its modules (pure logic)."""

from __future__ import annotations

import ast
from pathlib import Path

import proxy

PACKAGE = Path(proxy.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, as a dotted name (`from a import b` gives a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def door_modules() -> list[Path]:
    return [p for p in (PACKAGE / "doors").glob("*.py") if p.stem not in ("__init__", "kit")]


def test_the_doors_are_onebound_openai_and_service():
    from proxy.doors import DOORS

    assert sorted(door.__name__ for door in DOORS) == sorted(
        f"proxy.doors.{path.stem}" for path in door_modules()
    )


def test_no_door_imports_another_door():
    doors = {f"proxy.doors.{path.stem}" for path in door_modules()}
    for path in door_modules():
        others = doors - {f"proxy.doors.{path.stem}"}
        assert imported_modules(path) & others == set(), path.name
