"""The integration-file loader under arbitrary input: whatever the text, the only error that
escapes is SpecError, and every problem it lists names the file and a line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.errors import SpecError
from patchbay.spec import loads, redact_url

# Hundreds of generated inputs each: in `make test`, not in `make check`'s quick loop.
pytestmark = pytest.mark.slow

WHERE = Path("fuzz.yaml")
LOCATED = re.compile(r"^fuzz\.yaml:\d+[:]")

# Pieces of YAML syntax and of integration files, so that generated text gets past the
# tokenizer often enough to reach composition, construction and validation.
PIECES = [
    "\n", "  ", "    ", "- ", ": ", ":", ", ", "[", "]", "{", "}", "? ", "&a ", "*a", "&b ", "*b",
    "<<: ", "!!int ", "!!float ", "!!timestamp ", "!!binary ", "!!set ", "!!omap ", "!!python/name:x ",
    "!local ", "'", '"', "# c", "|", ">", "---", "...", "\t", "\\", "%YAML 1.1\n", "\x00", "\ufeff",
    "systems", "integrations", "name", "pattern", "migration", "broadcast", "aggregation",
    "source", "destination", "destinations", "sources", "system", "object", "key", "scope",
    "field", "in", "and", "not", "transform", "fields", "from", "expr", "lookup", "params",
    "param", "parameters", "merge", "union", "stream", "trigger", "cron", "options", "url",
    "sqlite:///x.db", "file:", "file:\x00", "postgresql://u:${PW}@h/db?password=${PW}", "${X}",
    "${X:-d}", "${", "1", "-1", "1e999", "0x1F", "2024-13-01", "null", "~", "true", "on", "x",
]

yaml_ish = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=20), st.dates(), st.datetimes())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), inner,
                                            max_size=4)),
    max_leaves=20)

VALID = yaml.safe_load("""
systems:
  legacy: sqlite:///legacy.db
  warehouse: {url: "postgresql://app:${PW}@db/crm?sslpassword=${PW}", options: {schema: public}}
integrations:
  - name: A to B - Account - migration
    pattern: migration
    parameters: {since: {type: date}}
    source:
      system: legacy
      object: accounts
      key: id
      scope: {and: [{field: status, eq: active}, {field: updated_at, gte: {param: since}}]}
    transform:
      fields:
        legacy_id: id
        Name: {from: name, trim: true, map: {a: b}}
        Parent: {lookup: {system: warehouse, object: accounts, key: k, value: v, returns: id}}
    destination: {system: warehouse, object: accounts, key: legacy_id}
  - name: A to B and C - broadcast
    pattern: broadcast
    source: {system: legacy, object: accounts, key: id}
    trigger: {cron: "*/5 * * * *"}
    destinations:
      - {name: b, system: warehouse, object: accounts, key: id, filter: {field: x, in: [1, 2]}}
  - name: customer 360
    pattern: aggregation
    sources: [{name: a, system: legacy, object: accounts}]
    merge: {union: [a], key: id, enrich: [{source: a, join: {x: y}, aggregate: {n: {count: "*"}}}]}
    schedule: {daily_at: ["02:00"]}
""")


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a document."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {**document, head: replaced(document[head], rest, value)}
    return [replaced(item, rest, value) if index == head else item
            for index, item in enumerate(document)]


def load_or_located_error(text: str) -> None:
    try:
        loads(text, path=WHERE, environ={"PW": "s3cret"})
    except SpecError as exc:
        assert exc.problems, str(exc)
        for problem in exc.problems:
            assert LOCATED.match(problem), problem


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    load_or_located_error(text)


@FUZZ
@given(yaml_ish)
def test_yaml_ish_text(text: str) -> None:
    load_or_located_error(text)


@FUZZ
@given(values)
def test_arbitrary_documents(document: Any) -> None:
    load_or_located_error(yaml.safe_dump(document))


@FUZZ
@given(st.text(max_size=60), st.sampled_from(["", "file:", "sqlite:///", "postgresql://u:"]))
def test_arbitrary_system_urls(url: str, scheme: str) -> None:
    systems = {"legacy": scheme + url, "warehouse": {"url": url, "options": {"password": url}}}
    load_or_located_error(yaml.safe_dump({**VALID, "systems": systems}))


@FUZZ
@given(st.data())
def test_a_valid_file_with_one_part_replaced(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(paths(VALID)))
    document = replaced(VALID, path, data.draw(values))
    load_or_located_error(yaml.safe_dump(document, sort_keys=False))


@FUZZ
@given(st.data())
def test_a_valid_file_with_text_inserted(data: st.DataObject) -> None:
    text = yaml.safe_dump(VALID, sort_keys=False)
    at = data.draw(st.integers(0, len(text)))
    load_or_located_error(text[:at] + data.draw(yaml_ish) + text[at:])


def test_the_valid_file_loads() -> None:
    assert [i.name for i in loads(yaml.safe_dump(VALID), path=WHERE, environ={"PW": "x"}).integrations] \
        == ["A to B - Account - migration", "A to B and C - broadcast", "customer 360"]


@FUZZ
@given(st.text(min_size=4, max_size=30), st.sampled_from(["password", "pwd", "sslpassword", "token",
                                                        "client_secret", "api_key", "pass%77ord"]))
def test_redact_url_hides_any_password_and_secret_argument(secret: str, name: str) -> None:
    encoded = quote(secret, safe="")
    url = f"postgresql://u:{encoded}@h/db?sslmode=require&{name}={encoded}"
    shown = redact_url(url)
    assert shown == f"postgresql://u:***@h/db?sslmode=require&{name}=***"
