"""The contract with jsforce 3, unmodified: SOAP login at its default API version (50.0),
identity, CRUD, queries with a parent-to-child subquery, describe's child relationships."""

from __future__ import annotations

from typing import Any

from patchbay.localorg.org import ORG_ID
from patchbay.localorg.running import LocalOrg
from tests.contract.conftest import CONTRACT, PASSWORD, TOKEN, USERNAME, run_json


def test_jsforce_logs_in_reads_writes_and_queries(local_org: LocalOrg) -> None:
    seen: Any = run_json(str(CONTRACT / "jsforce_client.mjs"), local_org.url, USERNAME,
                         PASSWORD + TOKEN)
    user_id = local_org.org.users[USERNAME].id
    assert seen["version"] == "50.0"
    assert seen["login"] == {"userId": user_id, "orgId": ORG_ID}
    assert seen["identity"] == {"userId": user_id, "orgId": ORG_ID, "username": USERNAME,
                                "displayName": "Integration User"}
    assert seen["crud"] == {"created": True, "contactsCreated": [True, True], "read": {
        "Name": "Acme", "Industry": "Energy", "Rating": "Hot", "OwnerIsUser": True}}
    assert seen["subquery"] == [
        {"Name": "Acme", "Contacts": {"totalSize": 2, "done": True, "LastNames": ["Li", "Ng"]}},
        {"Name": "Bare", "Contacts": None}]
    assert seen["query"] == {"totalSize": 2, "LastNames": ["Li", "Ng"]}
    assert seen["childRelationships"] == [
        "Account.ParentId:ChildAccounts", "Case.AccountId:Cases", "Contact.AccountId:Contacts",
        "Opportunity.AccountId:Opportunities"]
    assert seen["afterDelete"] == ["Li"]
