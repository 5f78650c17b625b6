"""No module of greenagents reaches into another's private names (issue 15).

A leading underscore says "this module's own business": another module that imports it (``from
.runtime import _unpack``) or reads it (``runtime._unpack``) breaks silently when the owner
changes it. What modules share goes through public names. Read with ``ast``, not by running code.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "greenagents"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def reaches_into(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """``line: what`` for each private name of another greenagents module that ``source`` (the
    text of ``module``) imports or reads."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> greenagents module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("greenagents"):
                    modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            origin = _absolute(module, node, is_package)
            if not origin.startswith("greenagents") or origin == module:
                continue
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{node.lineno}: from {origin} import {alias.name}")
                else:  # perhaps a submodule: ``from . import runtime``
                    modules[alias.asname or alias.name] = f"{origin}.{alias.name}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in modules
                and modules[node.value.id] != module):
            found.append(f"{node.lineno}: {modules[node.value.id]}.{node.attr}")
    return found


def test_no_module_imports_or_reads_another_modules_private_names() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{hit}" for path in sorted(PACKAGE.rglob("*.py"))
             for hit in reaches_into(_module_name(path), path.read_text(),
                                     is_package=path.name == "__init__.py")]
    assert not found, "private names used across modules; make them public or move them:\n" + \
        "\n".join(found)


def test_the_check_sees_both_forms() -> None:
    source = ("from greenagents.runtime import _unpack\nfrom .. import runtime\n"
              "import greenagents.feeder as feeder\nfrom ._own import _theirs\n"
              "runtime._Run\nfeeder.Feeder\n")
    assert reaches_into("greenagents.celery.dispatch", source) == [
        "1: from greenagents.runtime import _unpack",
        "4: from greenagents.celery._own import _theirs",
        "5: greenagents.runtime._Run"]
