"""The definition of "same": how two records are compared and when they are one.

A match definition is part of an integration file (the correlation pattern embeds one; a
sync's first matching may use one):

    match:
      id: patient_id
      fields:
        given_name: {kind: name}
        surname: {kind: name}
        date_of_birth: {kind: date, format: "%Y%m%d"}
        phone: {kind: phone, region: AU}
        postcode: {kind: postcode}
      blocking:
        - [postcode]
        - [date_of_birth]
        - [sound(surname), initial(given_name)]
      scoring:
        deterministic: [[national_id, date_of_birth]]
      term_frequency: [surname]
      strictness: balanced
      review: 6

    fields       the fields compared, each by its kind, in levels from the closest agreement
                 down (exact, normalised, fuzzy, distance); a missing value is no evidence
    blocking     rules a pair must meet one of to be compared at all
    scoring      deterministic tiers (keys that link outright) and the probabilistic model
    strictness   where a pair becomes a link: a preset or a threshold
    review       the band under the link threshold whose pairs go to a person
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from patchbay.spec.common import SpecModel

FieldKind = Literal["name", "text", "email", "phone", "date", "number", "postcode", "exact"]
LevelMethod = Literal["exact", "normalised", "jaro_winkler", "token_set", "levenshtein", "damerau",
                      "within", "days", "swapped_day_month"]
Preset = Literal["strict", "balanced", "lax"]

SIMILARITIES = frozenset({"jaro_winkler", "token_set"})
"""Level methods whose threshold is a similarity from 0 to 1 (at least)."""
EDITS = frozenset({"levenshtein", "damerau"})
"""Level methods whose threshold is a number of edits (at most)."""
DISTANCES = frozenset({"within", "days"})
"""Level methods whose threshold is a numeric difference (at most): a number, days."""

PRESETS: dict[str, float] = {"strict": 0.99999, "balanced": 0.99, "lax": 0.5}
"""Each strictness preset as the match probability a pair needs to link."""

BLOCKING_FUNCTIONS = frozenset({"sound", "initial", "prefix", "year"})
_EXPRESSION = re.compile(r"^\s*(?:(?P<function>[a-z_]+)\(\s*(?P<argument>[^,()\s]+)"
                         r"\s*(?:,\s*(?P<size>\d+)\s*)?\)|(?P<field>[^,()\s]+))\s*$")


class LevelSpec(SpecModel):
    """One level of agreement. In a file, a string names a level without threshold
    (`exact`, `normalised`, `swapped_day_month`) and a one-key mapping gives one with
    (`{jaro_winkler: 0.92}`, `{damerau: 1}`, `{within: 5}`, `{days: 31}`)."""

    method: LevelMethod = Field(
        description="exact: the same value; normalised: the same after the kind's "
                    "normalisation (case, spacing, punctuation, diacritics; canonical e-mail; "
                    "E.164 phone; a date); jaro_winkler, token_set: similarity of the "
                    "normalised values at least the threshold (0 to 1); levenshtein, "
                    "damerau: at most the threshold edits (damerau counts a swap of two "
                    "neighbours as one); within: numbers at most the threshold apart; days: "
                    "dates at most the threshold days apart; swapped_day_month: one date's "
                    "day and month are the other's month and day.")
    threshold: float | None = Field(default=None, description="The level's threshold (see method).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"method": value}
        if isinstance(value, dict) and len(value) == 1 and "method" not in value:
            [(method, threshold)] = value.items()
            return {"method": method, "threshold": threshold}
        return value

    @model_validator(mode="after")
    def _threshold_fits(self) -> LevelSpec:
        needs = self.method in SIMILARITIES | EDITS | DISTANCES
        if needs and self.threshold is None:
            raise ValueError(f"the level {self.method} needs a threshold: {{{self.method}: ...}}")
        if not needs and self.threshold is not None:
            raise ValueError(f"the level {self.method} takes no threshold")
        if self.method in SIMILARITIES and not 0 < (self.threshold or 0) <= 1:
            raise ValueError(f"the {self.method} threshold is a similarity above 0 and at most 1")
        if self.method in EDITS | DISTANCES and (self.threshold or 0) < 0:
            raise ValueError(f"the {self.method} threshold is a distance of at least 0")
        return self

    @property
    def label(self) -> str:
        """The level's name in pairs and explanations: `jaro_winkler>=0.92`, `damerau<=1`."""
        if self.threshold is None:
            return self.method
        bound = ">=" if self.method in SIMILARITIES else "<="
        return f"{self.method}{bound}{self.threshold:g}"


class MatchFieldSpec(SpecModel):
    """One compared field. Its kind chooses the normalisation and the default levels."""

    kind: FieldKind = Field(
        default="text", description="name (a person's or company's name), text, email, phone, "
                                    "date, number, postcode, exact (an identifier: no fuzzy "
                                    "levels).")
    levels: list[LevelSpec] | None = Field(
        default=None, description="The levels from the closest agreement down; a pair takes "
                                  "the first it meets. Default: the kind's levels.")
    region: str | None = Field(
        default=None, description="phone: the region a number without country code is in "
                                  "(ISO 3166 code, e.g. GB).")
    format: str | None = Field(
        default=None, description="date: the strptime format of text dates (default ISO "
                                  "8601, then YYYYMMDD).")

    @field_validator("region")
    @classmethod
    def _region_code(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z]{2}", value):
            raise ValueError(f"{value!r} is not a two-letter region code (ISO 3166: GB, US, AU)")
        return value.upper() if value else value

    @model_validator(mode="after")
    def _levels_fit_the_kind(self) -> MatchFieldSpec:
        methods = {level.method for level in self.levels or []}
        if self.levels == []:
            raise ValueError("a field needs at least one level (or none given, for its kind's)")
        if self.kind != "date" and methods & {"days", "swapped_day_month"}:
            raise ValueError("days and swapped_day_month are levels of a date field")
        if self.kind != "number" and "within" in methods:
            raise ValueError("within is a level of a number field")
        if self.region is not None and self.kind != "phone":
            raise ValueError("region is an option of a phone field")
        if self.format is not None and self.kind != "date":
            raise ValueError("format is an option of a date field")
        return self


class ScoringSpec(SpecModel):
    """How a compared pair is scored."""

    deterministic: list[list[str]] = Field(
        default_factory=list,
        description="Tiers of keys that link outright: a pair whose fields of one tier all "
                    "agree at the exact or normalised level is a link, whatever its score.")
    probabilistic: bool = Field(
        default=True, description="Score the other pairs with a Fellegi-Sunter model whose "
                                  "m and u are estimated from the data (no labels); false: "
                                  "only the deterministic tiers link.")
    prior: float | None = Field(
        default=None, gt=0, lt=1,
        description="The share of compared pairs that are matches, if known; default: "
                    "estimated by EM.")
    sample: int = Field(default=200_000, ge=1000,
                        description="Random pairs drawn to estimate u (how often non-matches agree).")
    iterations: int = Field(default=30, ge=1, description="At most this many EM rounds.")
    seed: int = Field(default=0, description="The seed of the random pairs: a rerun gives the same model.")


class MatchSpec(SpecModel):
    """The definition of "same" between two record sets, or inside one."""

    id: str = Field(default="id", description="The column that identifies a record on each side.")
    fields: dict[str, MatchFieldSpec] = Field(
        min_length=1, description="The compared fields, by name (the same on both sides).")
    blocking: list[list[str]] = Field(
        min_length=1,
        description="Rules, each a list of keys a pair must share to be compared: a field, "
                    "or sound(field) (how it sounds), initial(field), prefix(field, n), "
                    "year(field) of its normalised value. A pair meeting any rule is compared.")
    scoring: ScoringSpec = Field(default_factory=ScoringSpec, description="How pairs are scored.")
    term_frequency: list[str] = Field(
        default_factory=list,
        description="Fields where agreeing on a common value (Smith) counts less than on a "
                    "rare one: their exact agreement is weighed by the value's frequency.")
    strictness: Preset | float = Field(
        default="balanced",
        description="Where a pair becomes a link: strict, balanced, lax, or a number: a match "
                    "probability when between 0 and 1, otherwise a match weight (bits).")
    review: float = Field(
        default=6.0, ge=0,
        description="Pairs up to this much match weight (bits) under the link threshold go "
                    "to review; 0: none.")
    one_to_one: bool = Field(
        default=True, description="A record of one side is linked to at most one of the other.")

    @field_validator("blocking")
    @classmethod
    def _rules_not_empty(cls, rules: list[list[str]]) -> list[list[str]]:
        for number, rule in enumerate(rules, 1):
            if not rule:
                raise ValueError(f"blocking rule {number} is empty")
            for expression in rule:
                parse_blocking_key(expression)
        return rules

    @field_validator("blocking", "scoring", "term_frequency")
    @classmethod
    def _fields_known(cls, value: Any, info: ValidationInfo) -> Any:
        """Each part naming fields is checked on its own, so that a file's error points at
        the part (its line) that names an unknown one."""
        known = info.data.get("fields")
        if known is None:  # the fields are invalid themselves: reported as such
            return value
        if info.field_name == "blocking":
            used = [parse_blocking_key(e)[1] for rule in value for e in rule]
        elif info.field_name == "scoring":
            used = [field for tier in value.deterministic for field in tier]
        else:
            used = list(value)
        unknown = sorted({field for field in used if field not in known})
        if unknown:
            raise ValueError(f"not among the compared fields: {', '.join(unknown)} "
                             f"(fields: {', '.join(sorted(known))})")
        return value

    @model_validator(mode="after")
    def _fields_fit(self) -> MatchSpec:
        if any(not tier for tier in self.scoring.deterministic):
            raise ValueError("a deterministic tier names no field")
        if not self.scoring.probabilistic and not self.scoring.deterministic:
            raise ValueError("with scoring.probabilistic false, only deterministic tiers link: "
                             "declare at least one")
        if self.id in self.fields:
            raise ValueError(f"the id column {self.id!r} cannot be a compared field")
        return self


def threshold_weight(strictness: str | float) -> float:
    """A strictness (preset, probability or match weight) as a match weight in bits."""
    value = PRESETS[strictness] if isinstance(strictness, str) else strictness
    if 0 < value < 1:
        return math.log2(value / (1 - value))
    return float(value)


def parse_blocking_key(expression: str) -> tuple[str | None, str, int | None]:
    """A blocking key as (function or None, field, size): `prefix(surname, 3)` is
    ("prefix", "surname", 3); raises ValueError naming what is wrong."""
    found = _EXPRESSION.match(expression)
    if found is None:
        raise ValueError(f"{expression!r} is not a blocking key: a field, or sound(field), "
                         f"initial(field), prefix(field, n), year(field)")
    if found["field"]:
        return None, found["field"], None
    function, size = found["function"], found["size"]
    if function not in BLOCKING_FUNCTIONS:
        raise ValueError(f"{function}() is not a blocking function: "
                         f"{', '.join(sorted(BLOCKING_FUNCTIONS))}")
    if (function == "prefix") != (size is not None):
        raise ValueError("prefix takes a field and a length: prefix(surname, 3)" if function == "prefix"
                         else f"{function}() takes one field")
    return function, found["argument"], int(size) if size else None
