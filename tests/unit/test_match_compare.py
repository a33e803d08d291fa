"""The match element's comparisons: each kind's normalisation and each level, and a
missing value as no evidence."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from patchbay.elements.match.compare import NULL_LEVEL, compare, levels_of
from patchbay.elements.match.normalise import canonical_email, column, e164, sound
from patchbay.spec import MatchFieldSpec


def levels(field: dict[str, Any], left: list[Any], right: list[Any]) -> list[str]:
    """The level label of each pair (left[k], right[k])."""
    spec = MatchFieldSpec.model_validate(field)
    steps = levels_of(spec)
    a, b = column(pa.array(left), spec), column(pa.array(right), spec)
    rows = np.arange(len(left))
    labels = [level.label for level in steps] + ["else"]
    return ["null" if g == NULL_LEVEL else labels[g] for g in compare(a, b, rows, rows, steps)]


def test_a_name_agrees_normalised_across_case_diacritics_and_punctuation() -> None:
    assert levels({"kind": "name", "levels": ["exact", "normalised"]},
                  ["José", "  O'Brien ", "Anne-Marie", "Zoë", "smith"],
                  ["José", "obrien", "anne marie", "ZOE", "smyth"]) == [
        "exact", "normalised", "normalised", "normalised", "else"]


def test_the_default_name_levels_grade_typos() -> None:
    assert levels({"kind": "name"}, ["michaela", "michaela", "katherine", "jon", "anna"],
                  ["michaela", "micheala", "kathryn", "johnathan", "zoltan"]) == [
        "normalised", "damerau<=1", "jaro_winkler>=0.9", "jaro_winkler>=0.8", "else"]


def test_levenshtein_counts_a_swap_as_two_edits_and_damerau_as_one() -> None:
    assert levels({"kind": "text", "levels": [{"levenshtein": 1}]}, ["micheal"], ["michael"]) == ["else"]
    assert levels({"kind": "text", "levels": [{"damerau": 1}]}, ["micheal"], ["michael"]) == ["damerau<=1"]


def test_token_set_ignores_word_order_and_extra_words() -> None:
    assert levels({"kind": "text", "levels": [{"token_set": 0.95}]},
                  ["acme trading ltd", "acme trading"], ["ltd trading acme", "globex corp"]) == [
        "token_set>=0.95", "else"]


def test_e_mail_canonical_form() -> None:
    assert canonical_email(" John.Smith+news@GoogleMail.com ") == "johnsmith@gmail.com"
    assert canonical_email("j.smith+x@example.org") == "j.smith@example.org"
    assert canonical_email("not an address") is None
    assert levels({"kind": "email"}, ["J.Smith+crm@gmail.com", "ann@example.org", "nobody"],
                  ["jsmith@gmail.com", "anne@example.org", "nobody"]) == ["normalised", "damerau<=1", "null"]


def test_phone_numbers_compare_in_e164_with_the_default_region() -> None:
    assert e164("020 7946 0958", "GB") == "+442079460958"
    assert e164("+44 (0)20 7946-0958", None) == "+442079460958"
    assert e164("12", "GB") is None
    assert levels({"kind": "phone", "region": "GB"}, ["020 7946 0958", "07700 900123", "n/a"],
                  ["+44 20 7946 0958", "+44 7700 900124", "020 7946 0958"]) == [
        "normalised", "damerau<=1", "null"]


def test_dates_agree_swapped_by_a_typo_or_within_days() -> None:
    assert levels({"kind": "date"}, ["1980-03-04", "1980-03-04", "19800304", "1980-03-04", "1980-03-04"],
                  ["19800304", "1980-04-03", "1980-03-14", "1980-02-20", "1990-01-01"]) == [
        "normalised", "swapped_day_month", "damerau<=1", "days<=31", "else"]


def test_dates_may_come_typed_or_in_a_declared_format() -> None:
    assert levels({"kind": "date"}, [dt.date(1980, 3, 4)], [dt.date(1980, 3, 4)]) == ["normalised"]
    assert levels({"kind": "date", "format": "%d/%m/%Y"}, ["04/03/1980"], ["03/04/1980"]) == [
        "swapped_day_month"]


def test_numbers_agree_equal_or_within_a_distance() -> None:
    assert levels({"kind": "number", "levels": ["normalised", {"within": 2}]},
                  ["12", "1,200", "7", "abc"], [12.0, 1201.0, 10.0, 5.0]) == [
        "normalised", "within<=2", "else", "null"]


def test_postcodes_and_identifiers_ignore_spacing_and_case() -> None:
    assert levels({"kind": "postcode"}, ["SW1A 1AA", "2000"], ["sw1a1aa", "2001"]) == [
        "normalised", "damerau<=1"]
    assert levels({"kind": "exact"}, ["AB-123", "AB-123"], ["ab 123", "AB-124"]) == ["normalised", "else"]


def test_a_missing_value_is_no_evidence_never_agreement() -> None:
    assert levels({"kind": "name"}, [None, "", "  ", None], ["smith", "", "smith", None]) == ["null"] * 4


@pytest.mark.parametrize(("name", "code"), [("robert", "R163"), ("rupert", "R163"), ("ashcraft", "A261"),
                                            ("tymczak", "T522"), ("pfister", "P236"), ("lee", "L000")])
def test_sound_codes(name: str, code: str) -> None:
    assert sound(name) == code


@pytest.mark.parametrize(("field", "message"), [
    ({"kind": "name", "levels": [{"jaro_winkler": 1.5}]}, "similarity above 0 and at most 1"),
    ({"kind": "name", "levels": ["jaro_winkler"]}, "needs a threshold"),
    ({"kind": "name", "levels": [{"normalised": 1}]}, "takes no threshold"),
    ({"kind": "name", "levels": ["swapped_day_month"]}, "levels of a date field"),
    ({"kind": "text", "levels": [{"within": 1}]}, "level of a number field"),
    ({"kind": "phone", "region": "GBR"}, "two-letter region code"),
    ({"kind": "name", "region": "GB"}, "option of a phone field"),
    ({"kind": "name", "levels": [{"soundex": 1}]}, "method"),
])
def test_level_declarations_are_checked(field: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MatchFieldSpec.model_validate(field)
