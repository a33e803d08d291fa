"""The match element: which records of two record sets (or of one) are the same, under a
declared definition of "same" (`patchbay.spec.MatchSpec`).

    normalise       each field's values in the forms its levels compare
    compare         the level each candidate pair agrees at, field by field
    blocking        the candidate pairs: a union of equality joins in DuckDB
    fellegi_sunter  m and u per level, estimated without labels; match weights
    assign          one-to-one: each record in at most one pair
    matcher         `Matcher(spec).fit(left, right)`: pairs, links, explain
"""

from patchbay.elements.match.matcher import Explanation, FieldEvidence, Matcher

__all__ = ["Explanation", "FieldEvidence", "Matcher"]
