"""`model.jsonable`, the one value-to-JSON helper of the engine state, reports and answers."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from decimal import Decimal

from patchbay.model import jsonable


def test_values_become_what_json_holds_item_by_item() -> None:
    value = {
        "at": dt.datetime(2026, 3, 1, 10, 0, 5, tzinfo=dt.UTC), "on": dt.date(2026, 3, 1),
        "time": dt.time(9, 30), "amount": Decimal("0E-8"), "big": Decimal("1.5E+3"),
        "ratio": math.nan, "far": -math.inf, "id": uuid.UUID(int=1), 7: ("a", {"b"}),
        "plain": [1, 2.5, True, None, "x"]}
    assert jsonable(value) == {
        "at": "2026-03-01T10:00:05+00:00", "on": "2026-03-01", "time": "09:30:00",
        "amount": "0.00000000", "big": "1500", "ratio": None, "far": None,
        "id": "00000000-0000-0000-0000-000000000001", "7": ["a", ["b"]],
        "plain": [1, 2.5, True, None, "x"]}
    json.dumps(jsonable(value), allow_nan=False)  # strict JSON: no NaN left
