"""Each compared field's values in the forms its levels compare: as given, normalised, and
for dates and numbers as numbers.

Work is per record (never per pair): text goes through Arrow's string kernels; e-mail,
phone and sound codes, which need a parser, are computed once per distinct value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from patchbay.extras import driver_needed
from patchbay.spec.match import MatchFieldSpec

Strings = npt.NDArray[np.object_]
"""Text values, None where missing."""

_GMAIL = frozenset({"gmail.com", "googlemail.com"})


@dataclass(frozen=True)
class Column:
    """One field of one record set, in the forms its comparisons need (all aligned by row).

    `raw` is the value as text (trimmed), `norm` the kind's normalised form; a missing or
    blank value is None in both, and a value the kind cannot read (an e-mail without @) is
    None in `norm`: `present` says where `norm` has a value. `number` holds a number
    field's values and a date field's day number (days since 1970), NaN where missing or
    not readable."""

    raw: Strings
    norm: Strings
    number: npt.NDArray[np.float64] | None = None

    @cached_property
    def present(self) -> npt.NDArray[np.bool_]:
        return np.asarray(pa.array(self.norm, pa.string()).is_valid().to_numpy(zero_copy_only=False),
                          dtype=bool)


def column(values: pa.Array | pa.ChunkedArray, spec: MatchFieldSpec) -> Column:
    """`values` prepared for comparison as `spec` (its kind) says."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if spec.kind == "date":
        return _date_column(values, spec.format)
    raw = text(values)
    if spec.kind in ("name", "text"):
        norm = _plain(raw)
    elif spec.kind in ("postcode", "exact"):
        norm = pc.replace_substring_regex(_plain(raw), r"\s+", "")
    elif spec.kind == "email":
        norm = _per_value(raw, canonical_email)
    elif spec.kind == "phone":
        region = spec.region
        norm = _per_value(_unspaced(raw), lambda value: e164(value, region))
    else:  # number
        number = _numbers(values, raw)
        floats = np.asarray(number.to_numpy(zero_copy_only=False), dtype=np.float64)
        return Column(raw=_objects(raw), norm=_objects(pc.cast(number, pa.string())), number=floats)
    return Column(raw=_objects(raw), norm=_objects(norm))


def text(values: pa.Array) -> pa.Array:
    """Values as trimmed text; blank is missing."""
    text = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    text = pc.utf8_trim_whitespace(text)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _plain(text: pa.Array) -> pa.Array:
    """Lower case without diacritics, apostrophes, punctuation or repeated spaces:
    "  O'Brien-Núñez " is "obrien nunez"."""
    text = pc.utf8_normalize(pc.utf8_lower(text), "NFKD")
    text = pc.replace_substring_regex(text, r"\p{Mn}+", "")
    text = pc.replace_substring_regex(text, "['\u2019`]", "")
    text = pc.replace_substring_regex(text, r"[^\p{L}\p{N}]+", " ")
    text = pc.utf8_trim_whitespace(text)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _per_value(text: pa.Array, form: Callable[[str], str | None]) -> pa.Array:
    """`form` of each distinct value, spread back over the rows."""
    encoded = pc.dictionary_encode(text)
    dictionary = [form(value) for value in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(dictionary, pa.string()), encoded.indices)


def _unspaced(text: pa.Array) -> pa.Array:
    """Phone numbers written with digits and spaces only, without the spaces: the parser
    reads "07700 900123" and "07700900123" alike, so each number is parsed once however it
    is spaced (any other character may matter to it: those values are left as written)."""
    plain = pc.match_substring_regex(text, r"^\+?[0-9 ]+$")
    return pc.if_else(pc.fill_null(plain, False), pc.replace_substring(text, " ", ""), text)


def _numbers(values: pa.Array, raw: pa.Array) -> pa.Array:
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type) \
            or pa.types.is_decimal(values.type):
        return pc.cast(values, pa.float64())
    # thousands separators and spaces go; a value still not a number is missing as one
    cleaned = pc.replace_substring_regex(raw, r"[\s,]", "")
    readable = pc.match_substring_regex(cleaned, r"^[+-]?\d*\.?\d+([eE][+-]?\d+)?$")
    kept = pc.if_else(readable, cleaned, pa.scalar(None, pa.string()))
    return pc.cast(kept, pa.float64())


def _objects(array: pa.Array) -> Strings:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)


def canonical_email(value: str) -> str | None:
    """The address as one mailbox: lower case, without a +tag, and without dots in the
    local part where the provider ignores them (Gmail)."""
    local, at, domain = value.strip().lower().rpartition("@")
    if not at or not local or "." not in domain:
        return None
    local = local.split("+", 1)[0]
    if domain in _GMAIL:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}" if local else None


@lru_cache(maxsize=1 << 18)
def e164(value: str, region: str | None) -> str | None:
    """The number in E.164 (+441632960983), or None when it is not a possible number.
    Parsing costs about 60 µs a value, and a correlation parses both whole sides again at
    every full match: the answers of the last quarter million values are kept (in memory
    only, as the values being matched are)."""
    phonenumbers = _phonenumbers()
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


@cache
def _phonenumbers() -> Any:
    with driver_needed("a phone comparison"):
        import phonenumbers
    return phonenumbers


def _date_column(values: pa.Array, format: str | None) -> Column:
    """A date field: `norm` is the date as YYYYMMDD digits (the digits as written when the
    text is no valid date, so that a typo can still agree at an edit-distance level) and
    `number` its day number."""
    if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
        dates = pc.cast(values, pa.date32()) if not pa.types.is_date32(values.type) else values
        raw = text(values)
        digits = pc.strftime(pc.cast(dates, pa.timestamp("s")), "%Y%m%d")
    else:
        raw = text(values)
        formats = [format] if format else ["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d"]
        parsed = [pc.strptime(raw, f, "s", error_is_null=True) for f in formats]
        stamps = pc.coalesce(*parsed) if len(parsed) > 1 else parsed[0]
        dates = pc.cast(stamps, pa.date32())
        written = pc.replace_substring_regex(raw, r"\D", "")
        written = pc.if_else(pc.equal(pc.utf8_length(written), 8), written, pa.scalar(None, pa.string()))
        digits = pc.coalesce(pc.strftime(stamps, "%Y%m%d"), written)
    days = np.asarray(pc.cast(dates, pa.int32()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return Column(raw=_objects(raw), norm=_objects(digits), number=days)


_SOUND_CLASSES = str.maketrans({**dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"),
                                **dict.fromkeys("dt", "3"), "l": "4", **dict.fromkeys("mn", "5"),
                                "r": "6", **dict.fromkeys("aeiouy", "0"), **dict.fromkeys("hw", "")})


def sound(value: str) -> str | None:
    """How a name sounds, as a letter and three digits (the classic American census code):
    "robert" and "rupert" are R163. Letters of one sound class next to each other (or
    separated by h or w) count once; vowels separate."""
    letters = "".join(c for c in value.lower() if "a" <= c <= "z")
    if not letters:
        return None
    digits: list[str] = []
    previous = letters[0].translate(_SOUND_CLASSES)
    for code in letters[1:].translate(_SOUND_CLASSES):  # h and w are gone: their neighbours meet
        if code != previous and code != "0":
            digits.append(code)
        previous = code
    return (letters[0].upper() + "".join(digits) + "000")[:4]


def sounds(norm: Strings) -> Strings:
    """`sound` of each value (per distinct value)."""
    text = pa.array(norm, pa.string())
    return _objects(_per_value(text, sound))
