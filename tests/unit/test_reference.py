"""docs/reference.md is current: its generated parts are what the models, the scope
operators, the expression functions and the connector registry say now."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from patchbay import reference, spec
from patchbay.connectors import base as connectors
from patchbay.elements import expressions

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reference.md"


def test_the_reference_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert reference.render(text) == text, "run: python -m patchbay.reference docs/reference.md"


def test_it_covers_every_model_function_operator_and_scheme() -> None:
    text = DOC.read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (.+)$", text, re.MULTILINE))
    assert {m.__name__ for m in reference.models_of(spec.Document)} <= headings
    assert {"MigrationSpec", "BroadcastSpec", "AggregationSpec", "FieldMapping", "Scope",
            "TriggerSpec", "MergeSpec"} <= headings
    assert set(expressions.DESCRIPTIONS) == set(expressions.FUNCTIONS)
    for name in expressions.FUNCTIONS:
        assert f"| `{name}(" in text
    for operator in spec.SCOPE_OPERATORS:
        assert f"| `{operator}` |" in text
    for scheme in connectors._BUILTIN:
        assert f"`{scheme}:`" in text


def test_hand_written_text_is_kept_and_stale_parts_are_found(tmp_path: Path) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text("# mine\n\n<!-- generated: scope -->\nold\n<!-- end generated: scope -->\n"
                     "\nkept\n", encoding="utf-8")
    check = [sys.executable, "-m", "patchbay.reference", "--check", str(stale)]
    refused = subprocess.run(check, capture_output=True, text=True, check=False)
    assert (refused.returncode, refused.stderr) == (
        1, f"{stale} is not current: run python -m patchbay.reference {stale}\n")
    assert reference.main([str(stale)]) == 0
    text = stale.read_text(encoding="utf-8")
    assert text.startswith("# mine\n\n<!-- generated: scope -->\n\n| operator |")
    assert text.endswith("| `is_null` | `true`: the field is null; `false`: it is not |\n\n"
                         "<!-- end generated: scope -->\n\nkept\n")
    assert subprocess.run(check, check=False).returncode == 0


def test_an_unknown_part_is_an_error() -> None:
    with pytest.raises(ValueError, match="no generated part called 'nope'; known: models, scope"):
        reference.render("<!-- generated: nope -->\n<!-- end generated: nope -->")


def test_a_function_without_a_description_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(expressions.FUNCTIONS, "reverse", lambda v: v[::-1])
    with pytest.raises(ValueError, match=r"without a description: \['reverse'\]"):
        reference.render("<!-- generated: functions -->\n<!-- end generated: functions -->")
