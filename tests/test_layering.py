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
    """Each door: a module of proxy/doors/, or a package there (the console's)."""
    doors = PACKAGE / "doors"
    modules = [p for p in doors.glob("*.py") if p.stem not in ("__init__", "kit")]
    return modules + [p for p in doors.iterdir() if (p / "__init__.py").exists()]


def door_files(door: Path) -> list[Path]:
    return sorted(door.glob("*.py")) if door.is_dir() else [door]


def test_the_doors_are_onebound_openai_and_service():
    from proxy.doors import DOORS

    assert sorted(door.__name__ for door in DOORS) == sorted(
        f"proxy.doors.{path.stem}" for path in door_modules()
    )


def test_no_door_imports_another_door():
    doors = {f"proxy.doors.{path.stem}" for path in door_modules()}
    for door in door_modules():
        others = doors - {f"proxy.doors.{door.stem}"}
        for path in door_files(door):
            imported = {name for name in imported_modules(path) if not _inside(name, door.stem)}
            assert {name for name in imported if _door_of(name) in others} == set(), path.name


def _door_of(module: str) -> str:
    """proxy.doors.admin.access -> proxy.doors.admin (the door a module belongs to)."""
    return ".".join(module.split(".")[:3])


def _inside(module: str, door: str) -> bool:
    return module == f"proxy.doors.{door}" or module.startswith(f"proxy.doors.{door}.")


def handler_modules() -> list[Path]:
    return [p for p in (PACKAGE / "handlers").glob("*.py") if p.stem != "__init__"]


def test_handlers_never_import_flask():
    for path in handler_modules():
        assert {name.split(".")[0] for name in imported_modules(path)} & {
            "flask",
            "werkzeug",
        } == set()


def test_handlers_never_import_each_others_private_names():
    for path in handler_modules():
        for name in imported_modules(path):
            module, _, imported = name.rpartition(".")
            if module.startswith("proxy.handlers"):
                assert not imported.startswith("_"), f"{path.name} imports {name}"


def test_the_o_args_schemas_are_in_their_own_module_not_in_a_handler():
    from marshmallow import Schema

    from proxy.catalog import METHODS

    for spec in METHODS:
        assert issubclass(spec.args_schema, Schema)
        assert spec.args_schema.__module__ == "proxy.schemas", spec.name


# The call path below the doors: plain values in, plain values out (a door reads and renders).
FLASK_FREE = ("calls", "params", "client_json", "arguments", "dispatcher", "metering", "metrics")


def test_the_call_path_below_the_doors_never_imports_flask():
    for stem in FLASK_FREE:
        imported = {name.split(".")[0] for name in imported_modules(PACKAGE / f"{stem}.py")}
        assert imported & {"flask", "werkzeug"} == set(), stem


def test_the_call_path_never_imports_a_door():
    for stem in FLASK_FREE:
        doors = {name for name in imported_modules(PACKAGE / f"{stem}.py") if ".doors" in name}
        assert doors == set(), stem
