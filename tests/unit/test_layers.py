"""The import contract: patchbay's layers import downwards only (docs/architecture.md).

    interfaces   cli, render, reference, demo, api, the package's own Python API
    runtime      runtime/          runs, serve loops, delivery
    patterns     patterns/         one module per pattern, the registry
    elements     elements/         scope, transform, conform, merge, reports ...
    connectors · store             side by side: neither imports the other
    base         model, errors, spec/, scope, compare, urls, extras, retry, cron, sfid,
                 atomic, processes, metrics, logs

and the local org stands apart: it imports only the leaf sfid.py, and only interfaces
import it, through its package (`from patchbay.localorg import ...`).

Every import is read from the source with `ast`, those under `if TYPE_CHECKING:` and inside
functions included: an import put off until it is needed is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import patchbay

SRC = Path(patchbay.__file__).parent

RANKS = {"interfaces": 5, "runtime": 4, "patterns": 3, "elements": 2, "connectors": 1, "store": 1,
         "base": 0}
"""A module may import its own layer and those ranked lower; connectors and store share a
rank but neither imports the other."""

def layer(module: str) -> str:
    """The layer of a module, by its path under src/patchbay (`runtime/runner.py`)."""
    top = module.split("/")[0].removesuffix(".py")
    if top in ("runtime", "patterns", "elements", "connectors", "store", "localorg"):
        return top
    if top in ("model", "errors", "spec", "scope", "compare", "urls", "extras", "retry", "cron",
               "sfid", "atomic", "processes", "metrics", "logs"):
        return "base"
    return "interfaces"  # cli, render, reference, demo, api, __init__


def module_path(name: str) -> str | None:
    """`patchbay.spec.common` -> `spec/common.py` (or `.../__init__.py`); None outside patchbay."""
    if name != "patchbay" and not name.startswith("patchbay."):
        return None
    parts = name.split(".")[1:]
    as_file = Path(*parts).with_suffix(".py") if parts else Path("__init__.py")
    if (SRC / as_file).is_file():
        return as_file.as_posix()
    as_package = Path(*parts, "__init__.py")
    return as_package.as_posix() if (SRC / as_package).is_file() else None


def absolute(node: ast.ImportFrom, package: tuple[str, ...]) -> str | None:
    """The module a `from ... import` names: a relative one (`from ..runtime import runner`)
    resolved against `package`, the importer's package (`("patchbay", "elements")`)."""
    if node.level == 0:
        return node.module
    if node.level > len(package):
        return None
    base = package[:len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def imports(path: Path, package: tuple[str, ...] = ()) -> set[str]:
    """The patchbay modules `path` imports (a `from package import module` names the module);
    `package` is the importer's package, which relative imports are read against."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (module := absolute(node, package)):
            names = [f"{module}.{alias.name}" for alias in node.names]
            names = [n if module_path(n) else module for n in names]
        else:
            continue
        found |= {p for p in map(module_path, names) if p is not None}
    return found


def edges() -> set[tuple[str, str]]:
    found = set()
    for path in SRC.rglob("*.py"):
        importer = path.relative_to(SRC).as_posix()
        package = ("patchbay", *path.relative_to(SRC).parent.parts)
        found |= {(importer, imported) for imported in imports(path, package)
                  if imported != importer}
    return found


def wrong(importer: str, imported: str) -> str | None:
    """Why this import breaks the layers, or None when it keeps them."""
    src, dst = layer(importer), layer(imported)
    if src == "localorg" or dst == "localorg":
        if src == dst or (src == "localorg" and imported == "sfid.py"):
            return None
        if src == "interfaces" and imported == "localorg/__init__.py":
            return None
        return "the local org stands apart (the engine reaches it through its package only)"
    if {src, dst} == {"connectors", "store"}:
        return "connectors and store sit side by side: neither imports the other"
    if RANKS[dst] > RANKS[src]:
        return f"{src} imports {dst}, a layer above it"
    return None


def test_every_import_points_down() -> None:
    broken = sorted(f"{importer} -> {imported}: {reason}"
                    for importer, imported in edges()
                    if (reason := wrong(importer, imported)) is not None)
    assert broken == []


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    module = tmp_path / "sneaky.py"
    module.write_text("from patchbay.runtime import runner\nimport patchbay.localorg.org\n")
    assert imports(module) == {"runtime/runner.py", "localorg/org.py"}
    assert wrong("elements/sneaky.py", "runtime/runner.py") == \
        "elements imports runtime, a layer above it"
    assert wrong("store/sneaky.py", "connectors/sql.py") == \
        "connectors and store sit side by side: neither imports the other"
    assert wrong("cli.py", "localorg/org.py") == \
        "the local org stands apart (the engine reaches it through its package only)"
    assert wrong("localorg/org.py", "spec/common.py") == \
        "the local org stands apart (the engine reaches it through its package only)"
    assert wrong("cli.py", "localorg/__init__.py") is None
    assert wrong("patterns/migration.py", "spec/registry.py") is None


def test_a_relative_import_is_read_like_an_absolute_one(tmp_path: Path) -> None:
    module = tmp_path / "sneaky.py"
    module.write_text("from ..runtime import runner\nfrom . import transform\nfrom .. import model\n")
    assert imports(module, ("patchbay", "elements")) == {
        "runtime/runner.py", "elements/transform.py", "model.py"}
