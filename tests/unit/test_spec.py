"""Integration files: parsing every feature, and errors that name file, line and field."""

from __future__ import annotations

import datetime as dt
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from patchbay import spec
from patchbay.errors import ParameterError, SpecError
from patchbay.model import FieldType, Operation
from patchbay.spec import IntegrationSpec, ParamRef, SystemSpec, load, loads, resolve_parameters

FULL = """\
version: 1
systems:
  legacy: sqlite:///legacy.db
  warehouse:
    url: postgresql://app:${PG_PASSWORD}@${PG_HOST:-db.internal}/crm
    options:
      schema: ${PG_SCHEMA:-public}
      pool_size: 5
integrations:
  - name: Legacy CRM to warehouse - Account - migration
    pattern: migration
    description: every active account
    parameters:
      since:
      countries: {type: list, default: [DE, AT]}
      limit: {type: integer, default: 10, description: how many}
      region: {type: string, choices: [emea, apac], default: emea}
    source:
      system: legacy
      object: accounts
      key: acct_id
      watermark: updated_at
      fields: [acct_id, acct_name, country, status, amount, updated_at]
      scope:
        and:
          - {field: status, eq: active}
          - {field: updated_at, gte: {param: since}}
          - {field: country, in: {param: countries}}
          - or:
              - {field: amount, gt: 100}
              - {field: amount, is_null: true}
          - not: {field: acct_name, like: "test%"}
    transform:
      keep_unmapped: false
      skip_if: "status == 'deleted'"
      fields:
        legacy_id: acct_id
        Name: {from: acct_name, trim: true, required: true}
        Source: {value: legacy}
        Region: {value: {param: region}}
        Label: {expr: "upper(acct_name) + ' ' + params.region"}
        Amount: {from: amount, type: decimal, default: 0}
        Opened: {from: opened, type: date, formats: ["%d.%m.%Y"]}
        Status: {from: status, map: {A: Active, I: Inactive}, unmapped: reject}
        ParentId:
          lookup:
            system: warehouse
            object: accounts
            key: legacy_id
            value: parent_acct_id
            returns: id
            on_missing: "null"
    destination:
      system: warehouse
      object: accounts
      operation: insert
      key: legacy_id
    options:
      batch_size: 500
      concurrency: 4
      max_rejects: 10
      verify: counts
      sample_size: 5
"""


def write(tmp_path: Path, text: str, name: str = "integration.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(text: str, path: Path | None = None, environ: dict[str, str] | None = None,
                ) -> list[str]:
    with pytest.raises(SpecError) as caught:
        loads(textwrap.dedent(text), path=path, environ=environ or {})
    return caught.value.problems


def minimal(**replace: str) -> str:
    """A small valid file; keyword arguments replace whole lines by their key."""
    lines = {
        "systems": "systems:\n  legacy: sqlite:///legacy.db\n  warehouse: sqlite:///wh.db\n",
        "head": "integrations:\n  - name: A to B - Account - migration\n    pattern: migration\n",
        "source": "    source: {system: legacy, object: accounts, key: id}\n",
        "transform": "",
        "destination": "    destination: {system: warehouse, object: accounts, key: legacy_id}\n",
        "extra": "",
    }
    lines.update(replace)
    return "".join(lines.values())


# -- a valid file -------------------------------------------------------------------------------


def test_every_feature_parses(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    loaded = load(path, environ={"PG_PASSWORD": "s3cret"})

    assert loaded.path == path
    legacy, warehouse = loaded.systems["legacy"], loaded.systems["warehouse"]
    assert legacy.name == "legacy"
    assert legacy.url == f"sqlite:///{(tmp_path / 'legacy.db').resolve()}"
    assert warehouse.url == "postgresql://app:s3cret@db.internal/crm"
    assert warehouse.options == {"schema": "public", "pool_size": 5}
    assert warehouse.scheme == "postgresql"

    integration = loaded.integration(None)
    assert integration is loaded.integration("Legacy CRM to warehouse - Account - migration")
    assert integration.description == "every active account"

    params = integration.parameters
    assert params["since"].type == "string" and params["since"].is_required
    assert params["countries"].type == "list" and not params["countries"].is_required
    assert params["limit"].default == 10 and params["limit"].description == "how many"
    assert params["region"].choices == ["emea", "apac"]

    source = integration.source
    assert (source.system, source.object, source.key, source.watermark) == (
        "legacy", "accounts", "acct_id", "updated_at")
    assert source.fields == ["acct_id", "acct_name", "country", "status", "amount", "updated_at"]
    scope = source.scope
    assert scope is not None and scope.and_ is not None and len(scope.and_) == 5
    assert scope.and_[0].field == "status" and scope.and_[0].eq == "active"
    assert scope.and_[1].gte == ParamRef(param="since")
    assert scope.and_[2].in_ == ParamRef(param="countries")
    assert scope.and_[3].or_ is not None and scope.and_[3].or_[1].is_null is True
    assert scope.and_[4].not_ is not None and scope.and_[4].not_.like == "test%"

    transform = integration.transform
    assert transform.skip_if == "status == 'deleted'" and transform.keep_unmapped is False
    fields = transform.fields
    assert fields["legacy_id"].from_ == "acct_id"
    assert fields["Name"].from_ == "acct_name" and fields["Name"].trim and fields["Name"].required
    assert fields["Source"].value == "legacy"
    assert fields["Region"].value == ParamRef(param="region")
    assert fields["Label"].expr == "upper(acct_name) + ' ' + params.region"
    assert fields["Amount"].type is FieldType.DECIMAL and fields["Amount"].default == 0
    assert fields["Opened"].formats == ["%d.%m.%Y"]
    assert fields["Status"].map == {"A": "Active", "I": "Inactive"}
    assert fields["Status"].unmapped == "reject"
    lookup = fields["ParentId"].lookup
    assert lookup is not None
    assert (lookup.system, lookup.object, lookup.key, lookup.value, lookup.returns,
            lookup.on_missing) == ("warehouse", "accounts", "legacy_id", "parent_acct_id", "id",
                                   "null")

    destination = integration.destination
    assert destination.operation is Operation.INSERT and destination.key == "legacy_id"
    options = integration.options
    assert (options.batch_size, options.concurrency, options.max_rejects, options.verify,
            options.sample_size) == (500, 4, 10, "counts", 5)
    assert ("warehouse", ("transform", "fields", "ParentId", "lookup", "system")) in \
        integration.systems_used()


def test_defaults_of_a_minimal_file() -> None:
    integration = loads(minimal(), environ={}).integration(None)
    assert integration.destination.operation is Operation.UPSERT
    assert integration.options.batch_size == 2000
    assert integration.options.verify == "full"
    assert integration.transform.fields == {}
    assert integration.parameters == {}


def test_captured_names_what_an_integration_reads_through_change_capture() -> None:
    def broadcast(changes: str) -> str:
        return textwrap.dedent(f"""
            systems: {{erp: "mysql://app@erp/erp", out: sqlite:///out.db}}
            integrations:
              - name: Items - broadcast
                pattern: broadcast
                source: {{system: erp, object: items, key: id}}
                trigger: {{changes: {changes}}}
                destinations: [{{name: out, system: out, object: items, key: id}}]
            """)

    assert loads(broadcast("cdc"), environ={}).integration(None).captured() == [("erp", "items")]
    assert loads(broadcast("poll"), environ={}).integration(None).captured() == []
    assert loads(minimal(), environ={}).integration(None).captured() == [], "the default"


def test_json_schema_describes_the_file() -> None:
    schema = spec.json_schema()
    assert "systems" in schema["properties"] and "integrations" in schema["properties"]


# -- malformed files ----------------------------------------------------------------------------


def test_malformed_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "systems:\n  legacy: sqlite:///x.db\nintegrations: [\n  {name: a\n")
    with pytest.raises(SpecError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:")
    assert "malformed YAML" in message
    line, column = message[len(str(path)) + 1:].split(":")[:2]
    assert int(line) == 5 and int(column) == 1


def test_malformed_yaml_tab_indentation_points_at_the_tab() -> None:
    with pytest.raises(SpecError) as caught:
        loads("systems:\n  a: b\n\tc: d\n", path=Path("f.yaml"), environ={})
    assert str(caught.value).startswith("f.yaml:3:1: malformed YAML")


def test_empty_file_and_non_mapping_are_errors() -> None:
    with pytest.raises(SpecError, match="empty"):
        loads("", environ={})
    with pytest.raises(SpecError, match="expected a mapping"):
        loads("- a\n- b\n", environ={})


def test_every_duplicate_key_is_reported_with_both_lines() -> None:
    text = minimal(
        systems="systems:\n  legacy: sqlite:///legacy.db\n  warehouse: sqlite:///wh.db\n"
                "  legacy: sqlite:///other.db\n",
        destination="    destination:\n      system: warehouse\n      object: accounts\n"
                    "      key: legacy_id\n      object: contacts\n",
    )
    with pytest.raises(SpecError) as caught:
        loads(text, path=Path("f.yaml"), environ={})
    assert caught.value.problems == [
        "f.yaml:4: systems.legacy: given twice, on lines 2 and 4; YAML would keep only the second",
        "f.yaml:13: integrations[0].destination.object: given twice, on lines 11 and 13; "
        "YAML would keep only the second",
    ]


def test_keys_that_the_loader_reads_as_one_are_duplicates() -> None:
    with pytest.raises(SpecError) as caught:
        loads("a: {yes: 1, true: 2, 1: 3, 0x1: 4, '1': 5}\n", path=Path("f.yaml"), environ={})
    assert caught.value.problems == [
        "f.yaml:1: a.true: given twice on line 1 (columns 5 and 13); YAML would keep only the second",
        "f.yaml:1: a.1: given twice on line 1 (columns 5 and 22); YAML would keep only the second",
        "f.yaml:1: a.0x1: given twice on line 1 (columns 5 and 28); YAML would keep only the second",
    ]


def test_merge_keys_and_equal_keys_in_different_mappings_are_not_duplicates() -> None:
    text = minimal(
        systems="systems:\n  legacy: &db {url: sqlite:///legacy.db}\n"
                "  warehouse: {<<: *db, url: sqlite:///wh.db}\n")
    assert loads(text, environ={}).systems["warehouse"].url.endswith("wh.db")


@pytest.mark.parametrize(("text", "start", "problem"), [
    ("a: !!int abc\n", "f.yaml:1:4", "cannot read 'abc' as int"),
    ("a: !!timestamp 2024-13-01\n", "f.yaml:1:4", "cannot read '2024-13-01' as timestamp"),
    ("a: !!python/object:os.system x\n", "f.yaml:1:4", "could not determine a constructor"),
    ("? [1]\n: 2\n", "f.yaml:1:3", "found unhashable key"),
    ("!!set : x\n", "f.yaml:1:1", "found unhashable key"),
    ("!!set a: 1\n", "f.yaml:1:1", "found unhashable key"),
    ("a: &x [1, *x]\n", "f.yaml:1:4", "an alias refers to the value that contains it"),
    ("a: " + "[" * 70 + "]" * 70 + "\n", "f.yaml:1:67", "nested more than 64 levels deep"),
    ("a: &a [" + ", ".join(["x"] * 60) + "]\nb: &b [" + ", ".join(["*a"] * 60) + "]\n"
     "c: [" + ", ".join(["*b"] * 60) + "]\n", "f.yaml:3:4", "holds more than 200000 values"),
])
def test_yaml_that_cannot_be_read_is_a_located_spec_error(text: str, start: str, problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        loads(text, path=Path("f.yaml"), environ={})
    assert str(caught.value).startswith(f"{start}: malformed YAML: {problem}")


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read integration file"):
        load(tmp_path / "nope.yaml")


def test_unknown_field_in_a_mapping_gets_line_and_suggestion(tmp_path: Path) -> None:
    text = minimal(transform="    transform:\n      fields:\n        Name: {frm: acct_name}\n")
    problems = problems_of(text, path=tmp_path / "f.yaml")
    assert problems == [
        f"{tmp_path / 'f.yaml'}:10: integrations[0].transform.fields.Name.frm: "
        "unknown field 'frm'; did you mean 'from'?"
    ]


def test_misspelt_option_gets_line_and_suggestion() -> None:
    problems = problems_of(minimal(extra="    options:\n      batch_sise: 100\n"))
    assert problems == ["<integration>:10: integrations[0].options.batch_sise: "
                        "unknown field 'batch_sise'; did you mean 'batch_size'?"]


def test_wrong_pattern_suggests_the_right_one() -> None:
    text = minimal(head="integrations:\n  - name: x\n    pattern: migraton\n")
    (problem,) = problems_of(text)
    assert problem.startswith("<integration>:6: integrations[0].pattern: 'migraton'")
    assert problem.endswith("did you mean 'migration'?")


def test_wrong_operation_suggests_the_right_one() -> None:
    text = minimal(destination="    destination: {system: warehouse, object: a, key: k, "
                               "operation: upsrt}\n")
    (problem,) = problems_of(text)
    assert problem.startswith("<integration>:8: integrations[0].destination.operation: 'upsrt'")
    assert "insert, update, upsert, delete" in problem
    assert problem.endswith("did you mean 'upsert'?")


def test_all_problems_of_a_file_are_reported_at_once() -> None:
    text = """\
        systems:
          legacy: sqlite:///legacy.db
        integrations:
          - name: one
            pattern: migraton
            source: {system: legacy, object: accounts, key: id, scop: {field: a, eq: 1}}
            transform:
              fields:
                Name: {frm: acct_name}
            destination: {system: legacy, object: accounts, operation: upsrt}
            options: {batch_sise: 5, concurrency: 0}
          - name: two
            pattern: migration
            source: {system: legacy, object: contacts, key: id}
            destination: {system: legacy, object: contacts, key: k}
            options: {verify: ful}
    """
    problems = problems_of(text, path=Path("crm.yaml"))
    joined = "\n".join(problems)
    expected = [
        "crm.yaml:5: integrations[0].pattern:",
        "crm.yaml:6: integrations[0].source.scop: unknown field 'scop'; did you mean 'scope'?",
        "crm.yaml:9: integrations[0].transform.fields.Name.frm: unknown field 'frm'",
        "crm.yaml:10: integrations[0].destination.operation: 'upsrt'",
        "crm.yaml:10: integrations[0].destination.key: this field is required",
        "crm.yaml:11: integrations[0].options.batch_sise: unknown field 'batch_sise'",
        "crm.yaml:11: integrations[0].options.concurrency:",
        "crm.yaml:16: integrations[1].options.verify: 'ful'",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), f"{start!r} not in\n{joined}"
    assert len(problems) == len(expected)


def test_a_scope_condition_needs_exactly_one_operator() -> None:
    text = minimal(source="    source:\n      system: legacy\n      object: a\n"
                          "      scope: {field: country, eq: DE, ne: AT}\n")
    (problem,) = problems_of(text)
    assert "integrations[0].source.scope" in problem
    assert "exactly one operator" in problem and "eq, ne" in problem


def test_a_field_mapping_takes_one_source_only() -> None:
    text = minimal(transform="    transform:\n      fields:\n        X: {from: a, value: 1}\n")
    (problem,) = problems_of(text)
    assert problem.startswith("<integration>:10: integrations[0].transform.fields.X")
    assert "from and value" in problem


# -- references ---------------------------------------------------------------------------------


def test_unknown_system_is_named_with_line_and_suggestion() -> None:
    text = minimal(source="    source: {system: legcy, object: accounts, key: id}\n")
    assert problems_of(text) == ["<integration>:7: integrations[0].source.system: "
                                 "unknown system 'legcy'; did you mean 'legacy'?"]


def test_unknown_lookup_system_is_reported() -> None:
    text = minimal(transform=(
        "    transform:\n      fields:\n        ParentId:\n          lookup: {system: crm, "
        "object: a, key: k, value: v, returns: id}\n"))
    (problem,) = problems_of(text)
    assert "integrations[0].transform.fields.ParentId.lookup.system: unknown system 'crm'" \
        in problem


def test_undeclared_parameter_in_scope_value_and_expression() -> None:
    text = minimal(
        source=("    source:\n      system: legacy\n      object: accounts\n"
                "      scope: {field: updated_at, gte: {param: snce}}\n"),
        transform=("    transform:\n      fields:\n        Region: {value: {param: region}}\n"
                   "        Label: {expr: \"params.label + name\"}\n"),
        extra="    parameters:\n      since: {type: date}\n",
    )
    problems = problems_of(text)
    assert problems == [
        "<integration>:10: integrations[0].source.scope.gte: parameter 'snce' is not declared "
        "under 'parameters'; did you mean 'since'?",
        "<integration>:13: integrations[0].transform.fields.Region.value: parameter 'region' is "
        "not declared under 'parameters'",
        "<integration>:14: integrations[0].transform.fields.Label.expr: parameter 'label' is "
        "not declared under 'parameters'",
    ]


def test_undeclared_parameter_inside_an_in_list() -> None:
    text = minimal(source=("    source:\n      system: legacy\n      object: a\n"
                           "      scope: {field: c, in: [DE, {param: extra}]}\n"))
    (problem,) = problems_of(text)
    assert "integrations[0].source.scope.in[1]: parameter 'extra' is not declared" in problem


def test_duplicate_integration_names() -> None:
    text = minimal(extra=("  - name: A to B - Account - migration\n    pattern: migration\n"
                          "    source: {system: legacy, object: a}\n"
                          "    destination: {system: warehouse, object: a, key: k}\n"))
    (problem,) = problems_of(text)
    assert "integrations[1].name: integration name 'A to B - Account - migration' is used twice" \
        in problem


def test_choosing_an_integration_by_name() -> None:
    loaded = loads(minimal(), environ={})
    with pytest.raises(SpecError, match="did you mean 'A to B - Account - migration'"):
        loaded.integration("A to B - Acount - migration")


# -- environment variables and secrets ----------------------------------------------------------


def test_missing_environment_variable_names_it_but_no_secret() -> None:
    text = minimal(systems=(
        "systems:\n  legacy: sqlite:///legacy.db\n"
        "  warehouse: postgresql://${PG_USER}:${PG_PASSWORD}@${PG_HOST}/crm\n"))
    with pytest.raises(SpecError) as caught:
        loads(text, environ={"PG_USER": "app", "PG_PASSWORD": "hunter2-very-secret"})
    assert caught.value.problems == [
        "<integration>:3: systems.warehouse: environment variable PG_HOST is not set"]
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value.problems)


def test_missing_environment_variable_in_url_and_options() -> None:
    text = minimal(systems=(
        "systems:\n  legacy: sqlite:///legacy.db\n  warehouse:\n"
        "    url: postgresql://app:${PG_PASSWORD}@db/crm\n"
        "    options: {token: '${API_TOKEN}'}\n"))
    problems = problems_of(text, environ={})
    assert problems == [
        "<integration>:4: systems.warehouse.url: environment variable PG_PASSWORD is not set",
        "<integration>:5: systems.warehouse.options.token: environment variable API_TOKEN is "
        "not set",
    ]


def test_resolved_url_holds_the_secret_and_defaults_apply() -> None:
    text = minimal(systems=(
        "systems:\n  legacy: sqlite:///legacy.db\n"
        "  warehouse: postgresql://app:${PG_PASSWORD}@${PG_HOST:-localhost}:${PG_PORT:-5432}/crm\n"))
    loaded = loads(text, environ={"PG_PASSWORD": "pa55", "PG_PORT": "6543"})
    assert loaded.systems["warehouse"].url == "postgresql://app:pa55@localhost:6543/crm"


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHBAY_TEST_PW", "from-env")
    text = minimal(systems=("systems:\n  legacy: sqlite:///legacy.db\n"
                            "  warehouse: postgresql://app:${PATCHBAY_TEST_PW}@db/crm\n"))
    assert loads(text).systems["warehouse"].url == "postgresql://app:from-env@db/crm"


@pytest.mark.parametrize("password", ["hunter2", "p@ss", "pa:ss", "s3cr/et", "p#ss", "p?ss"])
def test_password_is_redacted_in_repr_and_redacted_url(password: str) -> None:
    text = minimal(systems=("systems:\n  legacy: sqlite:///legacy.db\n"
                            "  warehouse: postgresql://app:${PG_PASSWORD}@db.internal:5432/crm\n"))
    system = loads(text, environ={"PG_PASSWORD": password}).systems["warehouse"]
    assert system.url == f"postgresql://app:{password}@db.internal:5432/crm"
    assert system.redacted_url == "postgresql://app:***@db.internal:5432/crm"
    for shown in (repr(system), str(system)):
        assert password not in shown
        assert "postgresql://app:***@db.internal:5432/crm" in shown
        assert "warehouse" in shown


def test_urls_without_password_are_unchanged() -> None:
    for url in ("sqlite:///tmp/x.db", "postgresql://app@db/crm", "postgresql://db/crm?x=a:b@c"):
        assert spec.redact_url(url) == url
    assert spec.redact_url("mysql+pymysql://u:pw@h/db?charset=utf8") == \
        "mysql+pymysql://u:***@h/db?charset=utf8"


def test_secret_names() -> None:
    names = ["password", "passwd", "pwd", "secret", "token", "access_token", "client_secret",
             "sslpassword", "api_key", "apiKey", "key", "sslkey", "Authorization", "auth",
             "private_key", "sig", "security_token", "pass%77ord", "routing_key", "keepalives",
             "sslmode", "user", "client_id", "authSource", "key_field"]
    assert [n for n in names if spec.is_secret_name(n)] == names[:18]


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u@h/db?password=hunter22", "postgresql://u@h/db?password=***"),
    ("postgresql://u@h/db?sslmode=require&passwd=p%40ss&x=1", "postgresql://u@h/db?sslmode=require&passwd=***&x=1"),
    ("postgresql://u:pw1@h/db?pass%77ord=abc%2Fdef", "postgresql://u:***@h/db?pass%77ord=***"),
    ("https://api.example.com/hook?access_token=t0k&client_secret=s3c&api_key=k3y&key=abcd&page=2",
     "https://api.example.com/hook?access_token=***&client_secret=***&api_key=***&key=***&page=2"),
    ("redis://h:6379/0?PWD=xyzw;token=ab12#frag", "redis://h:6379/0?PWD=***;token=***#frag"),
    ("nats://u:p1@h1:4222,nats://u:p2@h2:4222?token=tk12", "nats://u:***@h1:4222,nats://u:***@h2:4222?token=***"),
])
def test_secret_query_arguments_and_passwords_are_redacted(url: str, shown: str) -> None:
    assert spec.redact_url(url) == shown


def test_scrub_redacts_urls_and_every_form_of_a_system_secret() -> None:
    text = minimal(systems=("systems:\n  legacy: sqlite:///legacy.db\n  warehouse:\n"
                            "    url: https://app:${PW}@db/crm?sslpassword=${SSL}\n"
                            "    options: {headers: {Authorization: Bearer b3arer-t0ken}}\n"))
    system = loads(text, environ={"PW": "p%40ss%2Fw0rd", "SSL": "ss+l+k3y"}).systems["warehouse"]
    assert set(system.secrets) == {"p%40ss%2Fw0rd", "YXBwOnAlNDBzcyUyRncwcmQ=", "YXBwOnBAc3MvdzByZA==",
                                   "ss+l+k3y", "ss l k3y", "Bearer b3arer-t0ken"}
    said = ("connect to postgresql://app:p%40ss%2Fw0rd@db/crm?sslpassword=ss+l+k3y failed; "
            "password 'p@ss/w0rd', key 'ss l k3y', basic YXBwOnBAc3MvdzByZA==, b3arer 'Bearer b3arer-t0ken'")
    assert system.scrub(said) == ("connect to postgresql://app:***@db/crm?sslpassword=*** failed; "
                                  "password '***', key '***', basic ***, b3arer '***'")


# -- shorthand forms and paths ------------------------------------------------------------------


def test_shorthand_forms(tmp_path: Path) -> None:
    text = minimal(
        systems="systems:\n  legacy: \"sqlite:///x.db\"\n  warehouse: sqlite:///data/wh.db\n",
        transform="    transform:\n      fields:\n        Name: src_name\n",
        extra="    parameters: {since: }\n",
    )
    loaded = load(write(tmp_path, text))
    assert isinstance(loaded.systems["legacy"], SystemSpec)
    assert loaded.systems["legacy"].url == f"sqlite:///{(tmp_path / 'x.db').resolve()}"
    assert loaded.systems["warehouse"].url == \
        f"sqlite:///{(tmp_path / 'data' / 'wh.db').resolve()}"
    integration = loaded.integration(None)
    assert integration.transform.fields["Name"].from_ == "src_name"
    since = integration.parameters["since"]
    assert since.type == "string" and since.default is None and since.is_required


def test_absolute_and_memory_sqlite_urls_are_not_anchored(tmp_path: Path) -> None:
    text = minimal(systems=("systems:\n  legacy: sqlite:////abs/legacy.db\n"
                            "  warehouse: \"sqlite:///:memory:\"\n"))
    systems = load(write(tmp_path, text)).systems
    assert systems["legacy"].url == "sqlite:////abs/legacy.db"
    assert systems["warehouse"].url == "sqlite:///:memory:"


def test_relative_sqlite_path_without_a_file_is_relative_to_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    systems = loads(minimal(), environ={}).systems
    assert systems["legacy"].url == f"sqlite:///{(tmp_path / 'legacy.db').resolve()}"


# -- run parameters -----------------------------------------------------------------------------

PARAMS = minimal(extra="""\
    parameters:
      since: {type: date, description: first day}
      limit: {type: integer, default: 100}
      amount: {type: number, required: false}
      countries: {type: list, choices: [DE, AT, CH], required: false}
      dry: {type: boolean, default: false}
      at: {type: datetime, required: false}
      region: {choices: [emea, apac], default: emea}
""")


@pytest.fixture
def with_params() -> IntegrationSpec:
    return loads(PARAMS, environ={}).integration(None)


def test_parameters_are_converted_to_their_types(with_params: IntegrationSpec) -> None:
    values = resolve_parameters(with_params, {
        "since": "2024-01-31", "limit": "42", "amount": "1.5", "countries": "DE, AT",
        "dry": "yes", "at": "2024-01-31T10:00:00", "region": "apac"})
    assert values == {
        "since": dt.date(2024, 1, 31), "limit": 42, "amount": Decimal("1.5"),
        "countries": ["DE", "AT"], "dry": True, "at": dt.datetime(2024, 1, 31, 10),
        "region": "apac"}


def test_parameter_defaults_and_already_typed_values(with_params: IntegrationSpec) -> None:
    values = resolve_parameters(with_params, {"since": dt.date(2024, 2, 1), "countries": ["CH"],
                                              "dry": "0"})
    assert values["since"] == dt.date(2024, 2, 1)
    assert values["limit"] == 100
    assert values["countries"] == ["CH"]
    assert values["dry"] is False
    assert values["amount"] is None and values["at"] is None
    assert values["region"] == "emea"


def test_missing_required_parameter(with_params: IntegrationSpec) -> None:
    with pytest.raises(ParameterError) as caught:
        resolve_parameters(with_params, {})
    assert caught.value.problems == [
        "parameter 'since' is required: pass --param since=<date> (first day)"]


def test_unknown_parameter_with_suggestion(with_params: IntegrationSpec) -> None:
    with pytest.raises(ParameterError) as caught:
        resolve_parameters(with_params, {"since": "2024-01-01", "limt": "5"})
    assert caught.value.problems == [
        "unknown parameter 'limt' for 'A to B - Account - migration'; did you mean 'limit'?"]


def test_unknown_parameter_when_none_declared() -> None:
    integration = loads(minimal(), environ={}).integration(None)
    with pytest.raises(ParameterError, match="it declares none"):
        resolve_parameters(integration, {"x": "1"})


@pytest.mark.parametrize(("name", "raw"), [
    ("since", "31.01.2024"), ("limit", "ten"), ("dry", "maybe"), ("amount", "lots"),
    ("at", "yesterday"),
])
def test_parameter_of_the_wrong_type(with_params: IntegrationSpec, name: str, raw: str) -> None:
    given = {"since": "2024-01-01", name: raw}
    with pytest.raises(ParameterError) as caught:
        resolve_parameters(with_params, given)
    assert caught.value.problems == [f"parameter '{name}': {raw!r} is not a valid "
                                     f"{with_params.parameters[name].type}"]


def test_parameter_choices(with_params: IntegrationSpec) -> None:
    with pytest.raises(ParameterError) as caught:
        resolve_parameters(with_params, {"since": "2024-01-01", "region": "amer"})
    assert caught.value.problems == [
        "parameter 'region' must be one of ['emea', 'apac'], not 'amer'"]


def test_list_parameter_choices_apply_to_each_item(with_params: IntegrationSpec) -> None:
    values = resolve_parameters(with_params, {"since": "2024-01-01", "countries": "DE,CH"})
    assert values["countries"] == ["DE", "CH"]
    with pytest.raises(ParameterError, match="'countries' must be one of"):
        resolve_parameters(with_params, {"since": "2024-01-01", "countries": "DE,FR"})


def test_every_parameter_problem_is_reported_at_once(with_params: IntegrationSpec) -> None:
    with pytest.raises(ParameterError) as caught:
        resolve_parameters(with_params, {"limit": "x", "region": "amer", "extra": 1})
    assert len(caught.value.problems) == 4
    assert isinstance(caught.value, SpecError)
