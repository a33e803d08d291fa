"""Salesforce record ids: 15 case-sensitive characters, returned in their 18-character form.

A leaf module (it imports nothing of patchbay): the engine reads ids with it and the local
org makes them with it, so both agree on the checksum.

The first 3 characters are the object's key prefix. The 3-character suffix encodes, for
each 5-character chunk, which of its characters are upper-case letters.
"""

from __future__ import annotations

import string

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX = string.ascii_uppercase + "012345"


def checksum(id15: str) -> str:
    """The 3-character suffix of a 15-character id."""
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, ch in enumerate(id15[start:start + 5]) if "A" <= ch <= "Z")
        suffix += _SUFFIX[bits]
    return suffix


def to18(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character id, or None if it is not an id.

    An 18-character id is read case-insensitively: its suffix restores the case of the
    first 15 characters.
    """
    if len(value) == 15 and value.isalnum() and value.isascii():
        return value + checksum(value)
    if len(value) == 18 and value.isalnum() and value.isascii():
        suffix = value[15:].upper()
        chars = list(value[:15])
        for chunk, code in enumerate(suffix):
            position = _SUFFIX.find(code)
            if position < 0:
                return None
            for i in range(5):
                ch = chars[chunk * 5 + i]
                chars[chunk * 5 + i] = ch.upper() if position & (1 << i) else ch.lower() \
                    if ch.isalpha() else ch
        id15 = "".join(chars)
        return id15 + checksum(id15)
    return None


def make(prefix: str, counter: int) -> str:
    """The 18-character id number `counter` of an object with this key prefix."""
    digits = ""
    for _ in range(9):
        counter, rest = divmod(counter, 62)
        digits = _BASE62[rest] + digits
    id15 = prefix + "000" + digits
    return id15 + checksum(id15)


def prefix_of(record_id: str) -> str:
    return record_id[:3]
