"""The local org's standard objects: the fields every real org has, standard picklists with
Salesforce's standard value sets that take unlisted values, and custom picklists that refuse
them only when declared restricted."""

from __future__ import annotations

import pytest

from patchbay.localorg.org import Org, OrgConfig, OrgError

ROUTINE_FIELDS = {
    "Account": {"OwnerId": "reference", "ShippingStreet": "textarea", "ShippingCity": "string",
                "ShippingState": "string", "ShippingPostalCode": "string",
                "ShippingCountry": "string", "Fax": "phone", "Rating": "picklist",
                "Site": "string", "AccountSource": "picklist", "NumberOfEmployees": "int",
                "Ownership": "picklist", "TickerSymbol": "string", "Sic": "string"},
    "Contact": {"OwnerId": "reference", "MailingStreet": "textarea", "MailingCity": "string",
                "MailingState": "string", "MailingPostalCode": "string",
                "MailingCountry": "string", "Department": "string", "MobilePhone": "phone",
                "LeadSource": "picklist", "ReportsToId": "reference", "Salutation": "picklist",
                "HomePhone": "phone", "AssistantName": "string", "Description": "textarea"},
    "Lead": {"OwnerId": "reference", "Street": "textarea", "City": "string",
             "Industry": "picklist", "LeadSource": "picklist", "Rating": "picklist",
             "Phone": "phone", "Title": "string", "IsConverted": "boolean"},
    "Opportunity": {"OwnerId": "reference", "Type": "picklist", "LeadSource": "picklist",
                    "NextStep": "string", "ForecastCategoryName": "picklist",
                    "Description": "textarea"},
    "Case": {"OwnerId": "reference", "Origin": "picklist", "Reason": "picklist",
             "Type": "picklist", "SuppliedEmail": "email", "ParentId": "reference",
             "IsClosed": "boolean", "IsEscalated": "boolean"},
    "Organization": {"InstanceName": "string", "NamespacePrefix": "string",
                     "TrialExpirationDate": "datetime"},
}


@pytest.fixture
def org() -> Org:
    return Org()


def test_standard_objects_have_the_fields_every_org_has(org: Org) -> None:
    for name, expected in ROUTINE_FIELDS.items():
        obj = org.sobject(name)
        assert {f: obj.field(f).type for f in expected if obj.field(f)} == expected, name
    contact = org.sobject("Contact")
    assert (contact.field("ReportsToId").reference_to, contact.field("Department").length,
            contact.field("MobilePhone").length) == (("Contact",), 80, 40)
    account = org.sobject("Account")
    assert (account.field("Site").length, account.field("ShippingCity").length,
            account.field("ShippingStreet").length) == (80, 40, 255)


def test_owner_defaults_to_the_running_user_and_new_fields_are_written(org: Org) -> None:
    user = org.login("integration@patchbay.local", "password")
    account = org.sobject("Account")
    record_id = org.create(account, {"Name": "Acme", "ShippingCity": "Lyon", "Fax": "+33 1",
                                     "Rating": "Hot", "Site": "HQ", "AccountSource": "Web",
                                     "NumberOfEmployees": 40}, user)
    record = org.read(account, record_id)
    assert record["OwnerId"] == user.user_id
    assert (record["ShippingCity"], record["Fax"], record["Rating"], record["Site"],
            record["AccountSource"], record["NumberOfEmployees"]) == \
        ("Lyon", "+33 1", "Hot", "HQ", "Web", 40)
    boss = org.create(org.sobject("Contact"), {"LastName": "Boss"}, user)
    contact = org.create(org.sobject("Contact"), {
        "LastName": "Ng", "AccountId": record_id, "ReportsToId": boss, "Department": "Sales",
        "MobilePhone": "555", "LeadSource": "Web", "MailingStreet": "1 Main St"}, user)
    stored = org.read(org.sobject("Contact"), contact)
    assert (stored["OwnerId"], stored["ReportsToId"], stored["Department"], stored["MobilePhone"],
            stored["MailingStreet"]) == (user.user_id, boss, "Sales", "555", "1 Main St")
    case = org.create(org.sobject("Case"), {"Subject": "Broken", "Status": "Closed"}, user)
    assert org.read(org.sobject("Case"), case)["IsClosed"] is True


def test_the_organization_names_its_instance(org: Org) -> None:
    [org_id] = org.storage.find(org.sobject("Organization"),
                                org.sobject("Organization").field("Name"), "patchbay local org")
    record = org.read(org.sobject("Organization"), org_id)
    assert (record["InstanceName"], record["NamespacePrefix"], record["TrialExpirationDate"]) == \
        ("LOCAL", None, None)


def test_standard_picklists_carry_the_standard_value_sets(org: Org) -> None:
    industry = org.sobject("Account").field("Industry")
    assert len(industry.picklist) == 32
    assert {"Energy", "Finance", "Insurance", "Telecommunications", "Utilities",
            "Not For Profit", "Food & Beverage"} <= set(industry.picklist)
    assert org.sobject("Account").field("Rating").picklist == ("Hot", "Warm", "Cold")
    assert org.sobject("Lead").field("LeadSource").picklist == \
        ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
    for obj in org.schema:
        for f in obj:
            if f.type == "picklist":
                assert f.describe()["restrictedPicklist"] is False, f"{obj.name}.{f.name}"


def test_standard_picklists_accept_unlisted_values(org: Org) -> None:
    user = org.login("integration@patchbay.local", "password")
    account = org.sobject("Account")
    energy = org.create(account, {"Name": "Power Co", "Industry": "Energy"}, user)
    unlisted = org.create(account, {"Name": "Odd Co", "Industry": "Space Mining",
                                    "Type": "Franchise"}, user)
    assert org.read(account, energy)["Industry"] == "Energy"
    assert (org.read(account, unlisted)["Industry"], org.read(account, unlisted)["Type"]) == \
        ("Space Mining", "Franchise")
    lead = org.create(org.sobject("Lead"), {"LastName": "Li", "Company": "X",
                                            "LeadSource": "Webinar"}, user)
    assert org.read(org.sobject("Lead"), lead)["LeadSource"] == "Webinar"


def test_custom_picklists_refuse_unlisted_values_only_when_restricted() -> None:
    org = Org(OrgConfig(custom_schema={"fields": {"Account": [
        {"name": "Tier__c", "type": "picklist", "picklist": ["Gold", "Silver"], "restricted": True},
        {"name": "Region__c", "type": "picklist", "picklist": ["EMEA", "APAC"]}]}}))
    user = org.login("integration@patchbay.local", "password")
    account = org.sobject("Account")
    assert account.field("Tier__c").describe()["restrictedPicklist"] is True
    assert account.field("Region__c").describe()["restrictedPicklist"] is False
    record_id = org.create(account, {"Name": "A", "Tier__c": "Gold", "Region__c": "LATAM"}, user)
    assert org.read(account, record_id)["Region__c"] == "LATAM"
    with pytest.raises(OrgError, match="Tier: bad value for restricted picklist field: Platinum"):
        org.create(account, {"Name": "B", "Tier__c": "Platinum"}, user)
