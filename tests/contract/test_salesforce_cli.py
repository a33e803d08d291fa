"""The contract with the Salesforce CLI (`sf`), unmodified: `sf org login access-token`
(OAuth user info), an access token as the target org, `sf data query` (records and the
column metadata its table needs, with a subquery), `sf data create record`, `sf data get
record`. Every command runs with a throwaway HOME and no telemetry or update checks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from patchbay.localorg.org import ORG_ID
from patchbay.localorg.running import LocalOrg
from tests.contract.conftest import KEY, NODE_MODULES, PASSWORD, SECRET, USERNAME, run_node

SF = str(NODE_MODULES / "@salesforce" / "cli" / "bin" / "run.js")


class Cli:
    """`sf` as a user of this org runs it."""

    def __init__(self, home: Path, org: LocalOrg) -> None:
        self.org = org
        # CI=true pins the CLI's plain table style, whatever the environment running the tests
        # says: its boxed style is drawn only outside CI.
        self.env = {"HOME": str(home), "CI": "true", "SF_DISABLE_TELEMETRY": "true",
                    "SF_AUTOUPDATE_DISABLE": "true", "SF_SKIP_NEW_VERSION_CHECK": "true",
                    "SF_ORG_INSTANCE_URL": org.url, "SF_ACCESS_TOKEN": access_token(org)}

    def run(self, *args: str) -> str:
        return run_node(SF, *args, env=self.env)

    def json(self, *args: str) -> Any:
        answer = json.loads(self.run(*args, "--json"))
        assert answer["status"] == 0, answer
        return answer["result"]


def plain_table(text: str) -> list[list[str]]:
    """The header and rows of the CLI's plain table: a header, a rule of dashes, then one row
    a line up to a blank line, columns set apart by two or more spaces."""
    lines = text.splitlines()
    rule = next(n for n, line in enumerate(lines) if line and set(line) == {"-"})
    body = lines[rule + 1:]
    rows = body[:body.index("")] if "" in body else body
    return [re.split(r"\s{2,}", line.strip()) for line in [lines[rule - 1], *rows]]


def access_token(org: LocalOrg) -> str:
    answer = httpx.post(f"{org.url}/services/oauth2/token", data={
        "grant_type": "password", "client_id": KEY, "client_secret": SECRET,
        "username": USERNAME, "password": PASSWORD})
    return str(answer.json()["access_token"])


@pytest.fixture
def cli(tmp_path: Path, local_org: LocalOrg) -> Cli:
    return Cli(tmp_path, local_org)


def test_sf_logs_in_with_an_access_token(cli: Cli) -> None:
    result = cli.json("org", "login", "access-token", "--instance-url", cli.org.url,
                      "--no-prompt", "--alias", "local")
    assert (result["username"], result["orgId"]) == (USERNAME, ORG_ID)
    shown = cli.json("org", "display", "--target-org", "local")
    assert (shown["username"], shown["id"], shown["connectedStatus"]) == \
        (USERNAME, ORG_ID, "Connected")


def test_sf_creates_gets_and_queries_records(cli: Cli) -> None:
    cli.json("org", "login", "access-token", "--instance-url", cli.org.url, "--no-prompt",
             "--alias", "local")
    account = cli.json("data", "create", "record", "--sobject", "Account", "--values",
                       "Name='Acme Inc' Industry=Energy", "--target-org", "local")
    assert account["success"] is True
    contact = cli.json("data", "create", "record", "--sobject", "Contact", "--values",
                       f"LastName=Ng AccountId={account['id']}", "--target-org", "local")
    got = cli.json("data", "get", "record", "--sobject", "Contact", "--record-id", contact["id"],
                   "--target-org", "local")
    assert (got["LastName"], got["AccountId"], got["OwnerId"]) == \
        ("Ng", account["id"], cli.org.org.users[USERNAME].id)

    queried = cli.json("data", "query", "--query",
                       "SELECT Name, (SELECT LastName FROM Contacts) FROM Account",
                       "--target-org", "local")
    assert queried["totalSize"] == 1
    [record] = queried["records"]
    assert record["Name"] == "Acme Inc"
    assert (record["Contacts"]["totalSize"], [c["LastName"] for c in record["Contacts"]["records"]]) \
        == (1, ["Ng"])

    table = cli.run("data", "query", "--query",
                    "SELECT Name, Industry, Owner.Name, (SELECT LastName FROM Contacts) FROM Account",
                    "--target-org", "local")
    rows = plain_table(table)
    assert rows == [["NAME", "INDUSTRY", "OWNER.NAME", "CONTACTS.LASTNAME"],
                    ["Acme Inc", "Energy", "Integration User", "Ng"]]


def test_sf_takes_an_access_token_as_the_target_org(cli: Cli) -> None:
    result = cli.json("data", "query", "--query", "SELECT Name, InstanceName FROM Organization",
                      "--target-org", cli.env["SF_ACCESS_TOKEN"])
    assert [(r["Name"], r["InstanceName"]) for r in result["records"]] == \
        [("patchbay local org", "LOCAL")]
