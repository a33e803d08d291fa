"""The local org's REST answers real clients rely on beyond simple-salesforce: every API
version Salesforce still serves, the identity URL and OAuth user info, column metadata,
describe's child relationship names, paths with doubled slashes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from patchbay.localorg.org import ORG_ID, OrgConfig
from patchbay.localorg.running import LocalOrg

USERNAME = "integration@patchbay.local"


@pytest.fixture
def org() -> Iterator[LocalOrg]:
    with LocalOrg(OrgConfig()) as local:
        yield local


@pytest.fixture
def http(org: LocalOrg) -> httpx.Client:
    token = httpx.post(f"{org.url}/services/oauth2/token", data={
        "grant_type": "password", "client_id": "patchbay-local-key",
        "client_secret": "patchbay-local-secret", "username": USERNAME,
        "password": "password"}).json()["access_token"]
    return httpx.Client(base_url=org.url, headers={"Authorization": f"Bearer {token}"})


def test_every_version_from_31_is_served(http: httpx.Client) -> None:
    listed = http.get("/services/data/").json()
    assert [v["version"] for v in listed] == [f"{n}.0" for n in range(31, 63)]
    labels = {v["version"]: v["label"] for v in listed}
    assert (labels["31.0"], labels["50.0"], labels["59.0"], labels["62.0"]) == \
        ("Summer '14", "Winter '21", "Winter '24", "Winter '25")
    for version in ("31.0", "50.0", "62.0"):
        assert http.get(f"/services/data/v{version}/limits").status_code == 200
    for version in ("30.0", "63.0"):
        assert http.get(f"/services/data/v{version}/limits").status_code == 404


def test_identity_and_userinfo_name_the_sessions_user(org: LocalOrg, http: httpx.Client) -> None:
    user_id = org.org.users[USERNAME].id
    identity = http.get(f"/id/{ORG_ID}/{user_id}").json()
    assert (identity["id"], identity["user_id"], identity["organization_id"],
            identity["username"], identity["display_name"]) == \
        (f"{org.url}/id/{ORG_ID}/{user_id}", user_id, ORG_ID, USERNAME, "Integration User")
    assert identity["urls"]["rest"] == f"{org.url}/services/data/v{{version}}/"
    info = http.get("/services/oauth2/userinfo").json()
    assert (info["sub"], info["user_id"], info["organization_id"], info["preferred_username"],
            info["given_name"], info["family_name"]) == \
        (identity["id"], user_id, ORG_ID, USERNAME, "Integration", "User")
    other_user = "005000000000009AAA"
    assert http.get(f"/id/{ORG_ID}/{other_user}").status_code == 403
    assert httpx.get(f"{org.url}/id/{ORG_ID}/{user_id}").status_code == 401
    assert httpx.get(f"{org.url}/services/oauth2/userinfo").status_code == 401


def test_columns_true_answers_column_metadata(http: httpx.Client) -> None:
    answer = http.get("/services/data/v59.0/query", params={
        "q": "SELECT Name, Owner.Name, (SELECT LastName FROM Contacts) FROM Account",
        "columns": "true"}).json()
    assert [(c["columnName"], c["aggregate"], [j["columnName"] for j in c["joinColumns"]])
            for c in answer["columnMetadata"]] == [
        ("Name", False, []), ("Owner", False, ["Name"]), ("Contacts", True, ["LastName"])]
    assert (answer["entityName"], answer["idSelected"], answer["keyPrefixes"]) == \
        ("Account", False, ["001"])


def test_describe_names_child_relationships(http: httpx.Client) -> None:
    described = http.get("/services/data/v59.0/sobjects/Contact/describe").json()
    assert {(r["childSObject"], r["field"], r["relationshipName"])
            for r in described["childRelationships"]} == {
        ("Contact", "ReportsToId", None), ("Case", "ContactId", "Cases"),
        ("Lead", "ConvertedContactId", None)}


def test_a_doubled_slash_reaches_the_same_resource(org: LocalOrg, http: httpx.Client) -> None:
    # A full URL, so that the client sends the path as written.
    assert http.get(f"{org.url}//services/data").json() == http.get("/services/data").json()
    assert http.get(f"{org.url}/services/data//v59.0//limits").status_code == 200


def test_a_bulk_query_refuses_a_subquery(http: httpx.Client) -> None:
    answer = http.post("/services/data/v59.0/jobs/query", json={
        "operation": "query", "query": "SELECT Name, (SELECT LastName FROM Contacts) FROM Account"})
    assert answer.status_code == 400
    assert answer.json() == [{"errorCode": "API_ERROR",
                              "message": "Bulk query does not support relationship subqueries"}]
