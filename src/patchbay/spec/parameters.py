"""The parameters of one run: what was given, checked against what the integration declares."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from patchbay.errors import ParameterError
from patchbay.spec.common import IntegrationSpec, suggest


def resolve_parameters(integration: IntegrationSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """Check and convert the parameters of one run; every problem is reported at once."""
    problems = []
    declared = integration.parameters
    for name in given:
        if name not in declared:
            hint = suggest(name, declared) or (
                f"; it declares {', '.join(declared)}" if declared else "; it declares none")
            problems.append(f"unknown parameter '{name}' for '{integration.name}'{hint}")
    values: dict[str, Any] = {}
    for name, param in declared.items():
        raw = given.get(name, param.default)
        if raw is None:
            if param.is_required:
                problems.append(f"parameter '{name}' is required: pass --param {name}=<{param.type}>"
                                + (f" ({param.description})" if param.description else ""))
            values[name] = None
            continue
        try:
            value = _convert_parameter(raw, param.type)
        except (ValueError, InvalidOperation) as exc:
            problems.append(f"parameter '{name}': {exc}")
            continue
        items = value if param.type == "list" else [value]
        if param.choices is not None and any(v not in param.choices for v in items):
            problems.append(f"parameter '{name}' must be one of {param.choices}, not {value!r}")
        values[name] = value
    if problems:
        raise ParameterError(f"cannot start '{integration.name}'", problems)
    return values


def _convert_parameter(raw: Any, kind: str) -> Any:
    if kind == "list":
        return [p.strip() for p in raw.split(",")] if isinstance(raw, str) else list(raw)
    if not isinstance(raw, str):
        return raw
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return Decimal(raw) if "." in raw else int(raw)
        if kind == "boolean":
            if raw.lower() in ("true", "yes", "1", "y"):
                return True
            if raw.lower() in ("false", "no", "0", "n"):
                return False
            raise ValueError
        if kind == "date":
            return dt.date.fromisoformat(raw)
        if kind == "datetime":
            return dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a valid {kind}") from None
    return raw

