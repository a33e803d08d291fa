"""Where a value of a record might be written, and whether it is: the whole engine state of a
SQLite state directory as text (every table and column, and the database's raw bytes), and a
search for values as they are and in the encodings a store or a digest commonly leaves them in."""

from __future__ import annotations

import base64
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path


def state_text(state: Path) -> str:
    """Every cell of every table of the state, as text (bytes decoded as they are), then the
    raw bytes of its files (which also hold rows since deleted or overwritten)."""
    parts: list[str] = []
    with sqlite3.connect(state / "state.db") as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "patchbay_cursors" in tables and "patchbay_outbox" in tables, tables
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                parts += [cell.decode("latin-1") if isinstance(cell, bytes) else str(cell)
                          for cell in row]
    parts += [path.read_bytes().decode("latin-1") for path in sorted(state.iterdir())
              if path.is_file()]
    return "\n".join(parts)


def encodings(value: str) -> set[str]:
    """`value` as it is, in lower and upper case, in hexadecimal and in base64."""
    raw = value.encode()
    return {value, value.lower(), value.upper(), raw.hex(), raw.hex().upper(),
            base64.b64encode(raw).decode(), base64.b64encode(raw).decode().rstrip("="),
            base64.urlsafe_b64encode(raw).decode().rstrip("=")}


def leaked(text: str, values: Iterable[str]) -> list[str]:
    """The values found in `text` in any of their `encodings`: as a whole token (not inside a
    longer word, number or digest, where a short key would be found by chance)."""
    found = []
    for value in values:
        for encoded in sorted(encodings(value)):
            if re.search(rf"(?<![0-9A-Za-z_.]){re.escape(encoded)}(?![0-9A-Za-z_])", text):
                found.append(f"{value!r} as {encoded!r}")
    return found
