"""Safe expressions over a record: `first_name + ' ' + last_name`, `upper(country)`,
`amount * 1.19 if currency == 'EUR' else amount`, `params.region`.

Only a whitelist of syntax and functions is accepted, checked once when the integration is
loaded; evaluation is then plain Python bytecode against the record's fields.
"""

from __future__ import annotations

import ast
import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from patchbay.errors import SpecError
from patchbay.model import Record


def _coalesce(*values: Any) -> Any:
    return next((v for v in values if v is not None and v != ""), None)


def _concat(*values: Any) -> str:
    return "".join("" if v is None else str(v) for v in values)


def _lift(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Null in, null out: functions of a missing value give a missing value."""
    def lifted(value: Any, *args: Any) -> Any:
        return None if value is None else fn(value, *args)
    return lifted


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "upper": _lift(lambda v: str(v).upper()),
    "lower": _lift(lambda v: str(v).lower()),
    "title": _lift(lambda v: str(v).title()),
    "strip": _lift(lambda v: str(v).strip()),
    "replace": _lift(lambda v, old, new: str(v).replace(old, new)),
    "left": _lift(lambda v, n: str(v)[:n]),
    "right": _lift(lambda v, n: str(v)[-n:] if n else ""),
    "split_part": _lift(lambda v, sep, i: (str(v).split(sep) + [""] * (i + 1))[i]),
    "length": _lift(lambda v: len(str(v))),
    "round": _lift(lambda v, n=0: round(v, n)),
    "int": _lift(int),
    "float": _lift(float),
    "decimal": _lift(lambda v: Decimal(str(v))),
    "str": _lift(str),
    "abs": _lift(abs),
    "min": min,
    "max": max,
    "coalesce": _coalesce,
    "concat": _concat,
    "today": lambda: dt.date.today(),
    "now": lambda: dt.datetime.now(dt.UTC),
}

DESCRIPTIONS: dict[str, str] = {
    "upper": "`upper(text)`: in capitals",
    "lower": "`lower(text)`: in small letters",
    "title": "`title(text)`: each word capitalised",
    "strip": "`strip(text)`: without surrounding spaces",
    "replace": "`replace(text, old, new)`: every `old` replaced by `new`",
    "left": "`left(text, n)`: the first n characters",
    "right": "`right(text, n)`: the last n characters",
    "split_part": "`split_part(text, separator, i)`: the i-th part (from 0), or empty text",
    "length": "`length(text)`: the number of characters",
    "round": "`round(number, digits=0)`: rounded half to even",
    "int": "`int(value)`: as an integer",
    "float": "`float(value)`: as a floating-point number",
    "decimal": "`decimal(value)`: as an exact decimal",
    "str": "`str(value)`: as text",
    "abs": "`abs(number)`: without its sign",
    "min": "`min(a, b, ...)`: the smallest",
    "max": "`max(a, b, ...)`: the largest",
    "coalesce": "`coalesce(a, b, ...)`: the first that is neither null nor empty text",
    "concat": "`concat(a, b, ...)`: joined as text, null as empty text",
    "today": "`today()`: the date on the machine running patchbay",
    "now": "`now()`: the current time, UTC",
}
"""What each function does, for the reference (a test checks every function has one)."""

_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Call,
    ast.Name, ast.Load, ast.Constant, ast.Attribute, ast.Subscript, ast.Tuple, ast.List,
    ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Add, ast.Sub, ast.Mult, ast.Div,
    ast.FloorDiv, ast.Mod, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In,
    ast.NotIn, ast.Is, ast.IsNot,
)


class Expression:
    """A compiled expression. `evaluate(record)` returns its value for one record."""

    def __init__(self, source: str, params: Mapping[str, Any] | None = None) -> None:
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise SpecError(f"expression {source!r}: {exc.msg} at column {exc.offset}") from None
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED_NODES):
                raise SpecError(f"expression {source!r}: {type(node).__name__} is not allowed")
            if isinstance(node, ast.Attribute) and not (
                    isinstance(node.value, ast.Name) and node.value.id == "params"):
                raise SpecError(f"expression {source!r}: only params.<name> may use a dot")
            if isinstance(node, ast.Call) and not (
                    isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise SpecError(f"expression {source!r}: unknown function {name}(); "
                                f"available: {', '.join(sorted(FUNCTIONS))}")
            if isinstance(node, ast.Subscript) and not (
                    isinstance(node.value, ast.Name) and node.value.id == "record"):
                raise SpecError(f"expression {source!r}: only record['field'] may be subscripted")
        self.fields = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
                             - set(FUNCTIONS) - {"params", "record", "None", "True", "False"})
        self._code = compile(tree, f"<expr {source}>", "eval")
        self._shadowed = tuple(sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
                                      & _GLOBAL_NAMES))
        self._globals: dict[str, Any] = {"__builtins__": {}, **FUNCTIONS,
                                         "params": SimpleNamespace(**(params or {}))}

    def evaluate(self, record: Record) -> Any:
        scope = _RecordScope(record)
        for name in self._shadowed:  # a field called `title` or `params` must not hide them
            scope.pop(name, None)
        return eval(self._code, self._globals, scope)


class _RecordScope(dict[str, Any]):
    """Names in an expression are the record's fields; a field the record lacks is None."""

    def __init__(self, record: Record) -> None:
        super().__init__(record)
        self["record"] = record

    def __missing__(self, key: str) -> Any:
        if key in _GLOBAL_NAMES:
            raise KeyError(key)  # let eval find the function or `params` in the globals
        return None


_GLOBAL_NAMES = frozenset({*FUNCTIONS, "params"})
