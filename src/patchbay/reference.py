"""The generated parts of docs/reference.md, from the models and registries they describe.

    python -m patchbay.reference docs/reference.md           rewrite the generated parts
    python -m patchbay.reference --check docs/reference.md   exit 1 if they are not current

A generated part sits between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->`;
everything outside the markers is hand-written and kept as it is.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from patchbay import spec
from patchbay.connectors import base as connectors
from patchbay.elements import expressions

_PART = re.compile(r"(<!-- generated: (?P<name>[a-z-]+) -->\n).*?(<!-- end generated: (?P=name) -->)",
                   re.DOTALL)


# -- integration file models --------------------------------------------------------------------


def models_of(root: type[BaseModel]) -> list[type[BaseModel]]:
    """`root` and every model its fields use, in the order a reader meets them."""
    found: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in found:
            return
        found.append(model)
        for field in model.model_fields.values():
            for used in _models_in(field.annotation):
                visit(used)

    visit(root)
    return found


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _models_in(arg)


def type_name(annotation: Any) -> str:
    """A field's type in the file's terms: text, integer, list of ..., one of ..., a model."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if origin in (Union, UnionType):
        members = [a for a in args if a is not type(None)]
        if set(get_args(spec.Scalar)) - {type(None)} <= set(members):
            # the scalars of the file, whichever YAML reads: text, numbers, dates, booleans
            members = [Any, *(m for m in members if m not in get_args(spec.Scalar))]
        return " or ".join(dict.fromkeys(type_name(a) for a in members))
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        item = type_name(args[0])
        return f"list of ({item})" if " or " in item else f"list of {item}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    names = {str: "text", int: "integer", float: "number", bool: "true/false",
             Any: "a value"}
    if annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "its defaults"
        return "empty" if not value else f"`{value}`"
    value = field.default
    if value is None or value is PydanticUndefined:
        return "`null`"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _models_part() -> str:
    out = []
    for model in models_of(spec.Document):
        out.append(f"### {model.__name__}\n")
        doc = inspect.getdoc(model)
        if doc and model.__doc__ is not None and "__doc__" in model.__dict__:
            out.append(doc + "\n")
        rows = [(name, field) for name, field in model.model_fields.items()
                if not (model is spec.SystemSpec and name == "name")]
        out.append("| field | type | default | meaning |\n|---|---|---|---|")
        for name, field in rows:
            alias = field.alias or name
            # a scope's operators are described once, in the scope operators' table
            meaning = field.description or (spec.SCOPE_OPERATORS.get(alias, "")
                                             if model is spec.Scope else "")
            out.append(f"| `{alias}` | {_cell(type_name(field.annotation))} | "
                       f"{_cell(_default(field))} | {_cell(meaning)} |")
        out.append("")
    return "\n".join(out)


# -- scope, expressions, connectors -------------------------------------------------------------


def _scope_part() -> str:
    rows = [f"| `{op}` | {meaning} |" for op, meaning in spec.SCOPE_OPERATORS.items()]
    return "\n".join(["| operator | a record is in scope when the field is |", "|---|---|", *rows, ""])


def _functions_part() -> str:
    missing = sorted(set(expressions.FUNCTIONS) - set(expressions.DESCRIPTIONS))
    extra = sorted(set(expressions.DESCRIPTIONS) - set(expressions.FUNCTIONS))
    if missing or extra:
        raise ValueError(f"expression functions without a description: {missing}; "
                         f"descriptions without a function: {extra}")
    rows = [f"| {expressions.DESCRIPTIONS[name]} |" for name in sorted(expressions.FUNCTIONS)]
    return "\n".join(["| function |", "|---|", *rows, ""])


def _connectors_part() -> str:
    by_class: dict[str, list[str]] = {}
    for scheme, target in connectors._BUILTIN.items():
        by_class.setdefault(target, []).append(scheme)
    out = []
    for target, schemes in by_class.items():
        cls = connectors.connector_class(schemes[0])
        module = sys.modules[cls.__module__]
        names = ", ".join(f"`{s}:`" for s in schemes)
        capabilities = ", ".join(sorted(c.value for c in cls.capabilities))
        out += [f"### {names}\n", f"`{target}`; can {capabilities}.\n",
                _indented_as_code(inspect.getdoc(module) or ""), ""]
    return "\n".join(out)


def _indented_as_code(doc: str) -> str:
    """A docstring as Markdown: its indented examples become fenced text blocks."""
    out: list[str] = []
    block: list[str] = []
    for line in [*doc.splitlines(), ""]:
        if line.startswith("    ") or (block and not line.strip()):
            block.append(line[4:])
            continue
        if block:
            while block and not block[-1].strip():
                block.pop()
            out += ["```text", *block, "```", ""]
            block = []
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


PARTS: dict[str, Callable[[], str]] = {
    "models": _models_part,
    "scope": _scope_part,
    "functions": _functions_part,
    "connectors": _connectors_part,
}


def render(text: str) -> str:
    """`text` (the reference) with every generated part made anew."""
    def part(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in PARTS:
            raise ValueError(f"no generated part called {name!r}; known: {', '.join(PARTS)}")
        return f"{match[1]}\n{PARTS[name]().rstrip()}\n\n{match[3]}"
    return _PART.sub(part, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchbay.reference",
                                     description="Regenerate the generated parts of the reference.")
    parser.add_argument("path", type=Path, nargs="?", default=Path("docs/reference.md"))
    parser.add_argument("--check", action="store_true", help="only say whether they are current")
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    current = render(text)
    if args.check:
        if current != text:
            print(f"{args.path} is not current: run python -m patchbay.reference {args.path}",
                  file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.path.write_text(current, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
