"""Blocking: the union of the rules' joins, each pair once, missing keys meeting nothing;
and the match definition's checks of its rules and fields."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from match_people import SPEC, two_sets  # beside the test modules (tests/unit is not a package)
from pydantic import ValidationError

from patchbay.elements.match.blocking import block, meets
from patchbay.elements.match.normalise import Column, column
from patchbay.spec import MatchFieldSpec, MatchSpec
from patchbay.spec.match import parse_blocking_key, threshold_weight

FIELDS = {"surname": MatchFieldSpec(kind="name"), "postcode": MatchFieldSpec(kind="postcode"),
          "born": MatchFieldSpec(kind="date")}


def columns(rows: list[tuple[Any, ...]]) -> dict[str, Column]:
    names = list(FIELDS)
    return {name: column(pa.array([row[k] for row in rows]), FIELDS[name]) for k, name in enumerate(names)}


LEFT = columns([("Smith", "2000", "1980-01-02"), ("Jones", "2000", None), ("Müller", None, "1970-05-06"),
                (None, "3000", "1990-01-01")])
RIGHT = columns([("smyth", "2000", "1980-01-02"), ("Mueller", "4000", "1970-05-06"), ("jones", "2000", None),
                 ("Brown", None, None)])


def pairs(rules: list[list[str]], left: dict[str, Column] = LEFT,
          right: dict[str, Column] | None = RIGHT) -> set[tuple[int, int]]:
    found = block(rules, left, right)
    return set(zip(found.left.tolist(), found.right.tolist(), strict=True))


def test_each_rule_is_an_equality_join_missing_keys_meeting_nothing() -> None:
    assert pairs([["postcode"]]) == {(0, 0), (0, 2), (1, 0), (1, 2)}
    assert pairs([["born"]]) == {(0, 0), (2, 1)}
    assert pairs([["sound(surname)"]]) == {(0, 0), (1, 2), (2, 1)}  # Müller sounds as Mueller
    assert pairs([["initial(surname)", "postcode"]]) == {(0, 0), (1, 2)}
    assert pairs([["prefix(surname, 2)"]]) == {(0, 0), (1, 2), (2, 1)}
    assert pairs([["year(born)"]]) == {(0, 0), (2, 1)}


def test_rules_are_a_union_each_pair_once_and_the_share_is_reported() -> None:
    rules = [["postcode"], ["born"], ["sound(surname)"]]
    assert pairs(rules) == pairs([rules[0]]) | pairs([rules[1]]) | pairs([rules[2]])
    found = block(rules, LEFT, RIGHT)
    assert len(found.left) == len(set(zip(found.left.tolist(), found.right.tolist(), strict=True))) == 5
    assert found.possible == 16 and found.share == 5 / 16
    assert list(zip(found.left.tolist(), found.right.tolist(), strict=True)) == sorted(pairs(rules))


def test_one_record_set_pairs_each_two_records_once() -> None:
    both = columns([("smith", "2000", None), ("smith", "2000", None), ("smith", "2000", None),
                    ("x", "1", None)])
    found = block([["postcode"], ["surname"]], both, None)
    assert set(zip(found.left.tolist(), found.right.tolist(), strict=True)) == {(0, 1), (0, 2), (1, 2)}
    assert found.possible == 6


def test_which_pairs_meet_a_rule() -> None:
    found = block([["postcode"], ["born"]], LEFT, RIGHT)
    met = meets(["born"], LEFT, RIGHT, found.left, found.right)
    assert {p for p, m in zip(zip(found.left.tolist(), found.right.tolist(), strict=True), met, strict=True)
            if m} == {(0, 0), (2, 1)}


def test_the_person_rules_keep_nearly_every_shared_pair_and_few_others() -> None:
    left, right, truth = two_sets()
    spec = MatchSpec.model_validate(SPEC)
    found = block(spec.blocking, {f: column(left.column(f), spec.fields[f]) for f in spec.fields},
                  {f: column(right.column(f), spec.fields[f]) for f in spec.fields})
    ids_left, ids_right = np.array(left.column("id").to_pylist()), np.array(right.column("id").to_pylist())
    candidates = set(zip(ids_left[found.left].tolist(), ids_right[found.right].tolist(), strict=True))
    assert len(candidates & truth) / len(truth) >= 0.99
    assert found.share < 0.05


@pytest.mark.parametrize(("key", "parsed"), [
    ("surname", (None, "surname", None)), ("sound(surname)", ("sound", "surname", None)),
    (" prefix( surname , 3 ) ", ("prefix", "surname", 3)), ("year(born)", ("year", "born", None)),
])
def test_blocking_keys(key: str, parsed: tuple[str | None, str, int | None]) -> None:
    assert parse_blocking_key(key) == parsed


@pytest.mark.parametrize(("changes", "message"), [
    ({"blocking": [["soundex(surname)"]]}, r"soundex\(\) is not a blocking function"),
    ({"blocking": [["prefix(surname)"]]}, "prefix takes a field and a length"),
    ({"blocking": [["sound(surname, 2)"]]}, r"sound\(\) takes one field"),
    ({"blocking": [[]]}, "blocking rule 1 is empty"),
    ({"blocking": [["postcod"]]}, "not among the compared fields: postcod"),
    ({"term_frequency": ["city"]}, "not among the compared fields: city"),
    ({"scoring": {"deterministic": [["ssn"]]}}, "not among the compared fields: ssn"),
    ({"strictness": "loose"}, "strictness"),
    ({"id": "surname"}, "cannot be a compared field"),
    ({"scoring": {"probabilistic": False}}, "only deterministic tiers link"),
])
def test_a_match_definition_is_checked(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MatchSpec.model_validate({**SPEC, **changes})


def test_strictness_is_a_preset_a_probability_or_a_weight() -> None:
    assert threshold_weight("lax") == 0.0
    assert threshold_weight(0.99) == pytest.approx(np.log2(99))
    assert threshold_weight(12) == 12.0
    assert threshold_weight("strict") > threshold_weight("balanced") > threshold_weight("lax")
