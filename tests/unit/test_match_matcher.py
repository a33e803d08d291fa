"""The match element end to end on synthetic person records: it finds the shared people,
the strictness dial is monotone, one-to-one holds, explain adds up, runs are repeatable."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from match_people import SPEC, two_sets  # beside the test modules (tests/unit is not a package)

from patchbay.elements.match import Matcher
from patchbay.errors import SpecError
from patchbay.spec import MatchSpec
from patchbay.spec.match import threshold_weight


def spec(**changes: Any) -> MatchSpec:
    return MatchSpec.model_validate({**SPEC, **changes})


def linked(matcher: Matcher, strictness: str | float | None = None) -> set[tuple[str, str]]:
    links = matcher.links(strictness)
    return set(zip(links.column("left_id").to_pylist(), links.column("right_id").to_pylist(), strict=True))


@pytest.fixture(scope="module")
def fitted() -> tuple[Matcher, set[tuple[str, str]]]:
    left, right, truth = two_sets()
    return Matcher(spec()).fit(left, right), truth


def test_it_finds_the_shared_records_without_labels(fitted: tuple[Matcher, set[tuple[str, str]]]) -> None:
    matcher, truth = fitted
    found = linked(matcher)
    assert len(found & truth) / len(found) >= 0.99
    assert len(found & truth) / len(truth) >= 0.95
    assert 0 < matcher.blocked.share < 0.2


def test_a_stricter_dial_links_a_subset(fitted: tuple[Matcher, set[tuple[str, str]]]) -> None:
    matcher, _ = fitted
    settings: list[str | float] = [-10, "lax", 0.9, "balanced", 10.0, "strict", 0.999999, 30]
    found = [linked(matcher, s) for s in settings]
    assert all(stricter <= laxer for laxer, stricter in itertools.pairwise(found))
    assert len(found[0]) > len(found[-1])


def test_each_record_is_in_at_most_one_link(fitted: tuple[Matcher, set[tuple[str, str]]]) -> None:
    matcher, _ = fitted
    pairs = matcher.pairs("lax")
    kept = pairs.filter(pc.not_equal(pairs.column("decision"), "none"))
    for side in ("left_id", "right_id"):
        assert len(set(kept.column(side).to_pylist())) == kept.num_rows


def test_without_one_to_one_a_duplicate_links_twice() -> None:
    left, right, truth = two_sets()
    pair = sorted(truth)[0]
    twin = right.filter(pc.equal(right.column("id"), pair[1])).set_column(0, "id", pa.array(["twin"]))
    right = pa.concat_tables([right, twin])
    assert {r for left_id, r in linked(Matcher(spec(one_to_one=False)).fit(left, right))
            if left_id == pair[0]} == {pair[1], "twin"}
    assert len({r for left_id, r in linked(Matcher(spec()).fit(left, right)) if left_id == pair[0]}) == 1


def test_review_holds_the_band_under_the_link_threshold() -> None:
    left, right, _ = two_sets()
    pairs = Matcher(spec(review=20)).fit(left, right).pairs()
    link_at = threshold_weight("balanced")
    for decision, low, high in (("link", link_at, 1e9), ("review", link_at - 20, link_at)):
        chosen = pairs.filter(pc.equal(pairs.column("decision"), decision))
        weights = chosen.column("match_weight").to_pylist()
        assert weights and all(low <= w < high for w in weights)
    without_review = Matcher(spec(review=0)).fit(left, right).pairs()
    assert "review" not in without_review.column("decision").to_pylist()


def test_explain_shows_each_fields_level_and_weight(fitted: tuple[Matcher, set[tuple[str, str]]]) -> None:
    matcher, _ = fitted
    pairs = matcher.pairs()
    row = pairs.filter(pc.equal(pairs.column("decision"), "link")).slice(0, 1).to_pylist()[0]
    explained = matcher.explain(row["left_id"], row["right_id"])
    assert explained.decision == "link" and explained.candidate
    assert [e.field for e in explained.fields] == list(SPEC["fields"])
    assert [e.level for e in explained.fields] == [row[f"{f}_level"] for f in SPEC["fields"]]
    assert explained.match_weight == pytest.approx(row["match_weight"])
    total = explained.prior_weight + sum(e.weight for e in explained.fields)
    assert total == pytest.approx(row["match_weight"])
    for evidence in explained.fields:
        assert (evidence.weight == 0) == (evidence.level == "null")
        assert evidence.weight > 0 or evidence.level != "normalised"


def test_explain_of_a_pair_blocking_never_offered(fitted: tuple[Matcher, set[tuple[str, str]]]) -> None:
    matcher, _ = fitted
    candidates = set(zip(matcher.pairs().column("left_id").to_pylist(),
                         matcher.pairs().column("right_id").to_pylist(), strict=True))
    outside = next((f"L{a}", f"R{b}") for a in range(400) for b in range(400)
                   if (f"L{a}", f"R{b}") not in candidates)
    explained = matcher.explain(*outside)
    assert not explained.candidate and explained.decision == "none"
    with pytest.raises(SpecError, match="no left record has id 'nobody'"):
        matcher.explain("nobody", "R1")


def test_a_refit_gives_the_same_pairs() -> None:
    left, right, _ = two_sets()
    assert Matcher(spec()).fit(left, right).pairs().equals(Matcher(spec()).fit(left, right).pairs())


def test_pandas_frames_are_accepted() -> None:
    left, right, _ = two_sets()
    from_frames = Matcher(spec()).fit(left.to_pandas(), right.to_pandas())
    assert linked(from_frames) == linked(Matcher(spec()).fit(left, right))


def test_a_deterministic_tier_links_outright() -> None:
    left, right, _ = two_sets()
    # a right record that shares only an e-mail address with a left record
    stranger = pa.table({"id": ["stranger"], "given_name": ["zebedee"], "surname": ["quux"],
                         "date_of_birth": ["1901-01-01"], "postcode": [left.column("postcode")[0].as_py()],
                         "email": [left.column("email")[0].as_py().upper()]})
    others = right.filter(pc.invert(pc.equal(right.column("email"), left.column("email")[0])))
    right = pa.concat_tables([others, stranger])
    assert (left.column("id")[0].as_py(), "stranger") not in linked(Matcher(spec()).fit(left, right))
    tiered = Matcher(spec(scoring={**SPEC["scoring"], "deterministic": [["email"]]})).fit(left, right)
    assert (left.column("id")[0].as_py(), "stranger") in linked(tiered, "strict")
    assert tiered.explain(left.column("id")[0].as_py(), "stranger").tier == 0
    only_tiers = spec(scoring={**SPEC["scoring"], "deterministic": [["email"]], "probabilistic": False})
    found = linked(Matcher(only_tiers).fit(left, right))
    assert (left.column("id")[0].as_py(), "stranger") in found
    email = {row["id"]: row["email"] for table in (left, right) for row in table.to_pylist()}
    assert all(email[a] and email[a].lower() == email[b].lower() for a, b in found)


def test_a_common_value_weighs_less_with_term_frequency() -> None:
    left, right, truth = two_sets()
    matcher = Matcher(spec(term_frequency=["postcode"])).fit(left, right)
    postcodes = pa.concat_arrays([t.column("postcode").combine_chunks() for t in (left, right)])
    counts = pc.value_counts(postcodes.drop_null())
    by_count = sorted(zip(counts.field("counts").to_pylist(), counts.field("values").to_pylist(),
                          strict=True))
    weights = {}
    for left_id, right_id in sorted(truth):
        evidence = {e.field: e for e in matcher.explain(left_id, right_id).fields}["postcode"]
        if evidence.level == "normalised":
            weights[evidence.left] = evidence.weight
    rare = min((c, v) for c, v in by_count if v in weights)[1]
    common = max((c, v) for c, v in by_count if v in weights)[1]
    assert weights[rare] > weights[common]


def test_one_record_set_with_itself_finds_its_duplicates() -> None:
    left, right, truth = two_sets(shared=150, right_only=0)
    both = pa.concat_tables([left, right.cast(left.schema)])
    matcher = Matcher(spec()).fit(both)
    pairs = matcher.pairs()
    ids = zip(pairs.column("left_id").to_pylist(), pairs.column("right_id").to_pylist(), strict=True)
    assert all(a != b for a, b in ids)
    found = {tuple(sorted(p)) for p in linked(matcher)}
    first, second = sorted(found)[0]
    assert matcher.explain(first, second).match_weight == matcher.explain(second, first).match_weight
    assert matcher.explain(second, first).decision == "link"
    expected = {tuple(sorted(p)) for p in truth}
    assert len(found & expected) / len(expected) >= 0.95
    assert len(found & expected) / len(found) >= 0.95


def test_record_sets_with_no_candidate_pair_give_no_pairs() -> None:
    left, right, _ = two_sets()
    far = right
    for field, value in (("postcode", "9999"), ("date_of_birth", "1800-01-01"), ("surname", None)):
        column = pa.array([value] * far.num_rows, pa.string())
        far = far.set_column(far.column_names.index(field), field, column)
    matcher = Matcher(spec()).fit(left, far)
    assert matcher.pairs().num_rows == 0 and matcher.links().num_rows == 0
    assert matcher.explain("L0", "R0").decision == "none"


def test_the_readme_match_definition_is_valid() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("```yaml\nmatch:\n", 1)[1].split("```", 1)[0]
    MatchSpec.model_validate(yaml.safe_load("match:\n" + block)["match"])


def test_records_without_a_compared_field_are_refused() -> None:
    left, right, _ = two_sets()
    with pytest.raises(SpecError, match="the right records have no column 'email'"):
        Matcher(spec()).fit(left, right.drop_columns(["email"]))


def test_a_rematch_scores_changed_records_as_the_fit_did() -> None:
    """A record re-matched under the fitted model (no refit) gets the weight the fit gave its
    pairs; a record whose compared values are the same is not taken for changed; a record
    gone, or replaced, is no candidate any more. The matcher has let go of its full match
    first, as a correlation's kept one has: a re-match needs none of it."""
    left, right, _ = two_sets()
    matcher = Matcher(spec(term_frequency=["surname"])).fit(left, right)
    weights = {(r["left_id"], r["right_id"]): r["match_weight"] for r in matcher.pairs().to_pylist()}
    [(left_id, right_id)] = list(linked(matcher))[:1]
    left_records, right_records = matcher.fitted_records()
    matcher.release()
    with pytest.raises(RuntimeError, match="let go of its full match"):
        matcher.pairs()

    one = right.filter(pc.equal(right.column("id"), right_id))
    assert not right_records.differing(one, "id").any()
    same = matcher.records(one, first_row=len(right_records.ids))
    right_records.update(same)
    found = matcher.rematch(left_records, right_records, right_keys=same.keys).to_pylist()
    assert found and all(row["right_id"] == right_id for row in found)
    assert {(r["left_id"], r["right_id"]): r["match_weight"] for r in found} == \
        pytest.approx({key: weights[key] for key in weights if key[1] == right_id})
    assert [r["decision"] for r in found if r["left_id"] == left_id] == ["link"]

    # the left record becomes someone else: changed, and no longer the right one's pair
    other = left.filter(pc.equal(left.column("id"), left_id)).to_pylist()[0]
    other.update({name: "zz" + str(value) for name, value in other.items()
                  if name != "id" and value is not None})
    changed = pa.Table.from_pylist([other], schema=left.schema)
    assert left_records.differing(changed, "id").all()
    moved = matcher.records(changed, first_row=len(left_records.ids))
    left_records.update(moved)
    found = matcher.rematch(left_records, right_records, right_keys=same.keys).to_pylist()
    assert left_id not in {row["left_id"] for row in found if row["decision"] == "link"}
    left_records.update(matcher.records(changed.slice(0, 0), first_row=len(left_records.ids)),
                        gone=[left_id])
    assert left_id not in left_records.rows
    assert left_id not in {row["left_id"] for row in matcher.rematch(
        left_records, right_records, right_keys=same.keys).to_pylist()}
