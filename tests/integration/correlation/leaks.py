"""Where a value of a record might be written, and whether it is: the whole engine state of a
SQLite state directory as text (every table and column, and the database's raw bytes), and a
search for values as they are, in any case, and in the encodings a store or a digest commonly
leaves them in (hexadecimal, base64)."""

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


def encodings(value: str) -> tuple[set[str], set[str]]:
    """`value` as the text holds it in any case (as it is, lower or upper, hexadecimal: to
    search for in lower case), and in base64 (with and without padding, URL-safe)."""
    raw = value.encode()
    return {value.lower(), raw.hex()}, {
        base64.b64encode(raw).decode(), base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("=")}


def leaked(text: str, values: Iterable[str]) -> list[str]:
    """The values found in `text` in any of their `encodings`: as a whole token (not inside a
    longer word, number or digest, where a short key would be found by chance)."""
    lowered = text.lower()
    found = []
    for value in values:
        anycase, exact = encodings(value)
        for haystack, needles in ((lowered, anycase), (text, exact)):
            # A plain search first (fast); the token's bounds only where it is there.
            for needle in sorted(n for n in needles if n in haystack):
                if re.search(rf"(?<![0-9A-Za-z_.]){re.escape(needle)}(?![0-9A-Za-z_])", haystack):
                    found.append(f"{value!r} as {needle!r}")
    return found
