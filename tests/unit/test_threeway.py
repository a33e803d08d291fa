"""The field-level three-way merge: echoes, clean edits, conflicts under each policy."""

from __future__ import annotations

from typing import Any

from patchbay.elements.threeway import FieldRule, Merge, merge

ORDER = ["crm", "erp", "billing"]


def merged(participant: str, current: dict[str, Any], *, shared: dict[str, Any],
           origins: dict[str, str] | None = None, known: dict[str, Any] | None = None,
           sent: dict[str, Any] | None = None, held: list[str] | None = None,
           rules: dict[str, FieldRule] | None = None) -> Merge:
    return merge(participant, current, shared=shared, origins=origins or {}, held=held or [],
                 known=known or {}, sent=sent or {}, rules=rules or {}, order=ORDER)


def test_the_echo_of_a_write_is_dropped_and_confirms_it() -> None:
    result = merged("erp", {"name": "Ada"}, shared={"name": "Ada"}, known={"name": "Old"},
                    sent={"name": "Ada"})
    assert (result.echoes, result.edits, result.changed, result.sent, result.known) == \
        (1, 0, set(), {}, {"name": "Ada"})


def test_an_edit_from_the_synced_value_becomes_the_shadow() -> None:
    result = merged("erp", {"name": "Ada L."}, shared={"name": "Ada"}, origins={"name": "crm"},
                    known={"name": "Ada"})
    assert (result.shared, result.origins, result.changed, result.conflicts) == \
        ({"name": "Ada L."}, {"name": "erp"}, {"name"}, [])


def test_an_edit_after_the_echo_is_a_change_even_to_the_same_field() -> None:
    first = merged("erp", {"name": "Ada"}, shared={"name": "Ada"}, known={}, sent={"name": "Ada"})
    again = merged("erp", {"name": "Ada B."}, shared=first.shared, known=first.known,
                   sent=first.sent)
    assert again.shared == {"name": "Ada B."} and again.conflicts == []


def test_edits_of_different_fields_never_conflict() -> None:
    base = {"name": "Ada", "tier": "gold"}
    crm = merged("crm", {"name": "Ada L.", "tier": "gold"}, shared=base, known=base)
    erp = merged("erp", {"name": "Ada", "tier": "silver"}, shared=crm.shared,
                 origins=crm.origins, known=base)
    assert erp.shared == {"name": "Ada L.", "tier": "silver"} and erp.conflicts == []
    assert erp.undone == set()  # erp still holds the old name: it is sent the new one, not undone


def test_a_concurrent_edit_is_a_conflict_settled_by_latest() -> None:
    # erp edited from "Ada" while crm's "Ada C." was on its way to it (sent).
    result = merged("erp", {"name": "Ada E."}, shared={"name": "Ada C."}, origins={"name": "crm"},
                    known={"name": "Ada"}, sent={"name": "Ada C."})
    assert result.shared == {"name": "Ada E."}
    [conflict] = result.conflicts
    assert (conflict.candidates, conflict.policy, conflict.winner) == \
        ({"crm": "Ada C.", "erp": "Ada E."}, "latest", "erp")


def test_priority_and_owner_keep_the_shadow_when_the_other_wins() -> None:
    for rule, winner in ((FieldRule("priority"), "crm"), (FieldRule("owner", owner="crm"), "crm")):
        result = merged("erp", {"name": "Ada E."}, shared={"name": "Ada C."},
                        origins={"name": "crm"}, known={"name": "Ada"}, sent={"name": "Ada C."},
                        rules={"name": rule})
        assert result.shared == {"name": "Ada C."} and result.undone == {"name"}
        assert result.conflicts[0].winner == winner


def test_owner_between_two_others_is_decided_by_participant_order_whichever_came_first() -> None:
    """billing owns the field; crm and erp both edit it: crm (listed first) wins, whether its
    change or erp's was observed first (the outcome never depends on the order seen)."""
    owned = {"name": FieldRule("owner", owner="billing")}
    erp_second = merged("erp", {"name": "Ada E."}, shared={"name": "Ada C."},
                        origins={"name": "crm"}, known={"name": "Ada"}, sent={"name": "Ada C."},
                        rules=owned)
    crm_second = merged("crm", {"name": "Ada C."}, shared={"name": "Ada E."},
                        origins={"name": "erp"}, known={"name": "Ada"}, sent={"name": "Ada E."},
                        rules=owned)
    assert erp_second.shared["name"] == crm_second.shared["name"] == "Ada C."
    assert erp_second.conflicts[0].winner == crm_second.conflicts[0].winner == "crm"


def test_manual_holds_the_field_and_keeps_both_values() -> None:
    result = merged("erp", {"name": "Ada E.", "tier": "gold"}, shared={"name": "Ada C."},
                    origins={"name": "crm"}, known={"name": "Ada"}, sent={"name": "Ada C."},
                    rules={"name": FieldRule("manual")})
    assert result.held == {"name"} and result.shared == {"name": "Ada C.", "tier": "gold"}
    assert result.conflicts[0].winner is None


def test_an_edit_by_a_participant_that_may_not_write_the_field_is_undone() -> None:
    result = merged("erp", {"credit": 10}, shared={"credit": 99}, known={"credit": 99},
                    rules={"credit": FieldRule(writers=frozenset({"billing"}))})
    assert result.shared == {"credit": 99} and result.undone == {"credit"}
    assert result.conflicts == []


def test_first_sight_of_a_matched_record_with_another_value_is_a_conflict() -> None:
    result = merged("erp", {"name": "Ada Lovelace"}, shared={"name": "Ada"},
                    origins={"name": "crm"})
    assert [c.candidates for c in result.conflicts] == [{"crm": "Ada", "erp": "Ada Lovelace"}]


def test_first_sight_fills_gaps_both_ways_without_a_conflict() -> None:
    filled = merged("erp", {"name": "Ada", "phone": None}, shared={"name": None, "phone": "+1"},
                    origins={"phone": "crm"})
    assert filled.shared == {"name": "Ada", "phone": "+1"} and filled.conflicts == []
    assert filled.known == {"name": "Ada", "phone": None}  # it is sent the phone
