"""Cut SOQL text into tokens that remember their offset (for the caret in error messages)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from patchbay.localorg.soql.errors import error_at
from patchbay.localorg.values import parse_datetime


@dataclass(frozen=True)
class Token:
    kind: str  # ident, string, number, date, datetime, op, "(", ")", ",", ".", eof
    text: str  # as written
    pos: int  # offset of its first character
    value: Any = None  # decoded: str for strings, int|float, date, datetime
    arg: int | None = None  # the n of a date literal written NAME:n
    chars: tuple[tuple[str, bool], ...] = ()  # a string's characters, each with "was backslash-escaped"

    @property
    def word(self) -> str:
        """An identifier without its `:n` argument."""
        return self.text.split(":", 1)[0]


_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SQL_INTEGERS = (-(2**63), 2**63 - 1)
_OPERATORS = ("<=", ">=", "!=", "<>", "=", "<", ">")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\",
            "%": "%", "_": "_"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            tokens.append(Token("eof", "<EOF>", pos))
            return tokens
        ch = text[pos]
        if ch == "'":
            token = _string(text, pos)
        elif ch.isdigit() or (ch in "+-." and _NUMBER.match(text, pos)):
            token = _literal(text, pos)
        elif _IDENT.match(ch):  # ASCII only: names never hold other letters
            token = _identifier(text, pos)
        elif ch in "(),.":
            token = Token(ch, ch, pos)
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, pos)), None)
            if op is None:
                raise error_at("MALFORMED_QUERY", text, pos, f"unexpected character: '{ch}'")
            token = Token("op", op, pos)
        tokens.append(token)
        pos += len(token.text)


def _string(text: str, start: int) -> Token:
    chars: list[tuple[str, bool]] = []
    pos = start + 1
    while pos < len(text):
        ch = text[pos]
        if ch == "'":
            value = "".join(c for c, _ in chars)
            return Token("string", text[start:pos + 1], start, value, chars=tuple(chars))
        if ch == "\\":
            code = text[pos + 1:pos + 2]
            if not code or code not in _ESCAPES:
                raise error_at("MALFORMED_QUERY", text, pos,
                             f"Illegal character sequence '\\{code}' in string literal.")
            chars.append((_ESCAPES[code], True))
            pos += 2
            continue
        chars.append((ch, False))
        pos += 1
    raise error_at("MALFORMED_QUERY", text, start, "unterminated string literal")


def _literal(text: str, pos: int) -> Token:
    """A datetime, date or number, tried in that order (each is a prefix of the one before)."""
    for kind, pattern in (("datetime", _DATETIME), ("date", _DATE), ("number", _NUMBER)):
        match = pattern.match(text, pos)
        if match is None:
            continue
        written = match.group()
        end = match.end()
        if end < len(text) and (text[end].isalnum() or text[end] in "_:"):
            raise error_at("MALFORMED_QUERY", text, pos, f"unexpected token: '{written}{text[end]}'")
        value: Any
        if kind == "datetime":
            value = parse_datetime(written)
        elif kind == "date":
            try:
                value = dt.date.fromisoformat(written)
            except ValueError:
                value = None
        else:
            value = float(written) if "." in written else int(written)
            if isinstance(value, int) and not _SQL_INTEGERS[0] <= value <= _SQL_INTEGERS[1]:
                # Past SQLite's integers: still a number, and it compares as one.
                value = float(written)
        if value is None:
            raise error_at("MALFORMED_QUERY", text, pos, f"invalid {kind}: {written}")
        return Token(kind, written, pos, value)
    raise error_at("MALFORMED_QUERY", text, pos, f"unexpected character: '{text[pos]}'")


def _identifier(text: str, pos: int) -> Token:
    match = _IDENT.match(text, pos)
    assert match is not None  # the caller saw a letter or an underscore
    end = match.end()
    if end < len(text) and text[end] == ":":
        # Only date literals take an argument, written without spaces: LAST_N_DAYS:30.
        digits = re.compile(r"\d+").match(text, end + 1)
        if digits is None:
            raise error_at("MALFORMED_QUERY", text, end, "unexpected character: ':'")
        return Token("ident", text[pos:digits.end()], pos, arg=int(digits.group()))
    return Token("ident", match.group(), pos)
