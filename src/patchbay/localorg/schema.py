"""The local org's objects and fields: the seed schema, custom objects from a JSON file,
and the describe documents Salesforce returns for them.

The standard objects carry the fields a new org has (with Salesforce's names, types and
lengths) and their picklists Salesforce's standard value sets, unrestricted as in a real
org. Custom schema file (JSON; the README documents every key):

    {"objects": [{"name": "Invoice__c", "label": "Invoice",
                  "fields": [{"name": "Number__c", "type": "string", "length": 20,
                              "externalId": true, "unique": true, "required": true},
                             {"name": "Account__c", "type": "reference",
                              "referenceTo": "Account", "childRelationshipName": "Invoices"},
                             {"name": "Status__c", "type": "picklist",
                              "picklist": ["Open", "Paid"], "restricted": true}]}],
     "fields": {"Account": [{"name": "Legacy_Id__c", "type": "string", "length": 40,
                             "externalId": true, "unique": true}]}}"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SOAP_TYPES = {
    "id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean", "int": "xsd:int",
    "double": "xsd:double", "currency": "xsd:double", "percent": "xsd:double",
    "date": "xsd:date", "datetime": "xsd:dateTime", "time": "xsd:time",
}
TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "picklist",
                        "multipicklist", "combobox", "encryptedstring"})
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})


@dataclass(frozen=True)
class SField:
    """One field of an sObject, as describe shows it."""

    name: str
    type: str
    label: str = ""
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    default_value: Any = None
    unique: bool = False
    external_id: bool = False
    case_sensitive: bool = False
    custom: bool = False
    name_field: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    child_relationship: str | None = None
    """The name of the list of children on the parent (Account.Contacts for Contact.AccountId)."""
    picklist: tuple[str, ...] = ()
    restricted_picklist: bool = False
    precision: int = 0
    scale: int = 0

    @property
    def required(self) -> bool:
        """Required on create: not nillable, createable, not filled by the org."""
        return not self.nillable and self.createable and not self.defaulted_on_create

    @property
    def id_lookup(self) -> bool:
        return self.type == "id" or self.external_id

    def describe(self) -> dict[str, Any]:
        text = self.type in TEXT_TYPES
        return {
            "name": self.name, "label": self.label or self.name, "type": self.type,
            "soapType": SOAP_TYPES.get(self.type, "xsd:string"),
            "length": self.length if text else 0,
            "byteLength": self.length * 3 if text else (18 if self.type in ("id", "reference") else 0),
            "precision": self.precision, "scale": self.scale,
            "digits": 9 if self.type == "int" else 0,
            "nillable": self.nillable, "createable": self.createable, "updateable": self.updateable,
            "defaultedOnCreate": self.defaulted_on_create, "defaultValue": self.default_value,
            "unique": self.unique, "externalId": self.external_id, "idLookup": self.id_lookup,
            "nameField": self.name_field, "custom": self.custom, "calculated": False,
            "autoNumber": False, "caseSensitive": self.case_sensitive, "filterable": True,
            "sortable": self.type != "textarea", "groupable": self.type not in ("textarea", "double"),
            "aggregatable": True, "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name, "relationshipOrder": None,
            "cascadeDelete": False, "restrictedDelete": False,
            "picklistValues": [{"active": True, "defaultValue": False, "label": v, "value": v,
                                "validFor": None} for v in self.picklist],
            "restrictedPicklist": self.restricted_picklist, "dependentPicklist": False,
            "controllerName": None, "htmlFormatted": False, "inlineHelpText": None,
            "polymorphicForeignKey": False, "deprecatedAndHidden": False,
        }


@dataclass
class SObject:
    """One kind of record: its name, key prefix and fields (by lower-case name)."""

    name: str
    key_prefix: str
    label: str = ""
    custom: bool = False
    ownable: bool = True
    readonly: bool = False
    fields: dict[str, SField] = field(default_factory=dict)

    def add(self, new: SField) -> None:
        self.fields[new.name.lower()] = new

    def field(self, name: str) -> SField | None:
        return self.fields.get(name.lower())

    def __iter__(self) -> Iterator[SField]:
        return iter(self.fields.values())

    def relationship(self, name: str) -> SField | None:
        """The reference field behind a relationship name (Account → AccountId)."""
        lowered = name.lower()
        return next((f for f in self if f.relationship_name
                     and f.relationship_name.lower() == lowered), None)

    def entry(self, version: str) -> dict[str, Any]:
        """The object's entry in the global describe."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        writable = not self.readonly
        return {
            "name": self.name, "label": self.label or self.name,
            "labelPlural": (self.label or self.name) + "s", "keyPrefix": self.key_prefix,
            "custom": self.custom, "createable": writable, "updateable": writable,
            "deletable": writable, "queryable": True, "retrieveable": True, "searchable": True,
            "undeletable": writable, "replicateable": True, "triggerable": writable,
            "layoutable": True, "mergeable": self.name in ("Account", "Contact", "Lead"),
            "feedEnabled": False, "activateable": False, "customSetting": False,
            "deprecatedAndHidden": False,
            "urls": {"sobject": base, "describe": base + "/describe",
                     "rowTemplate": base + "/{ID}"},
        }

    def describe(self, version: str, children: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self.entry(version), "fields": [f.describe() for f in self],
                "childRelationships": children, "recordTypeInfos": []}


class OrgSchema:
    """All objects of the org, found by name case-insensitively."""

    def __init__(self, objects: list[SObject]) -> None:
        self.objects = {o.name.lower(): o for o in objects}

    def get(self, name: str) -> SObject | None:
        return self.objects.get(name.lower())

    def by_prefix(self, prefix: str) -> SObject | None:
        return next((o for o in self.objects.values() if o.key_prefix == prefix), None)

    def __iter__(self) -> Iterator[SObject]:
        return iter(self.objects.values())

    def children_of(self, parent: SObject) -> list[dict[str, Any]]:
        return [{"childSObject": o.name, "field": f.name, "relationshipName": f.child_relationship,
                 "cascadeDelete": False, "restrictedDelete": False, "deprecatedAndHidden": False}
                for o in self for f in o if parent.name in f.reference_to]

    def child_relationship(self, parent: SObject, name: str) -> tuple[SObject, SField] | None:
        """The child object and its reference field behind a child relationship name
        (Account, "Contacts" → Contact, AccountId)."""
        lowered = name.lower()
        return next(((o, f) for o in self for f in o if parent.name in f.reference_to
                     and f.child_relationship and f.child_relationship.lower() == lowered), None)

    def extend(self, document: Mapping[str, Any]) -> None:
        """Add custom objects and fields from a schema document (see the module docstring)."""
        custom_prefixes = sum(1 for o in self if o.custom)
        for spec in document.get("objects", []):
            name = spec["name"]
            if self.get(name) is not None:
                raise ValueError(f"object {name} already exists")
            obj = _with_system_fields(SObject(
                name, spec.get("keyPrefix") or f"a{custom_prefixes:02d}",
                spec.get("label", name.removesuffix("__c")), custom=True))
            custom_prefixes += 1
            obj.add(SField("Name", "string", "Name", length=80, nillable=False, name_field=True,
                           defaulted_on_create=False))
            self.objects[name.lower()] = obj
            for field_spec in spec.get("fields", []):
                obj.add(_custom_field(obj, field_spec))
        for object_name, field_specs in document.get("fields", {}).items():
            target = self.get(object_name)
            if target is None:
                raise ValueError(f"no object {object_name} to add fields to")
            for field_spec in field_specs:
                target.add(_custom_field(target, field_spec))

    @classmethod
    def seed(cls, custom: Path | Mapping[str, Any] | None = None) -> OrgSchema:
        schema = cls(_standard_objects())
        if isinstance(custom, Path):
            schema.extend(json.loads(custom.read_text(encoding="utf-8")))
        elif custom is not None:
            schema.extend(custom)
        return schema


def _custom_field(obj: SObject, spec: Mapping[str, Any]) -> SField:
    kind = spec.get("type", "string")
    name = spec["name"]
    # A custom lookup's list on the parent: `childRelationshipName` + "__r" (as Salesforce
    # names it), by default the child object's name in the plural (Invoice__c → Invoices__r).
    children = spec.get("childRelationshipName") or obj.name.removesuffix("__c") + "s"
    reference_to = tuple([spec["referenceTo"]] if isinstance(spec.get("referenceTo"), str)
                         else spec.get("referenceTo", ()))
    return SField(
        name, kind, spec.get("label", name.removesuffix("__c").replace("_", " ")),
        length=int(spec.get("length", 255 if kind in TEXT_TYPES else 0)),
        nillable=not spec.get("required", False), unique=bool(spec.get("unique", False)),
        external_id=bool(spec.get("externalId", False)),
        case_sensitive=bool(spec.get("caseSensitive", False)), custom=name.endswith("__c"),
        reference_to=reference_to,
        relationship_name=(name[:-3] + "__r") if kind == "reference" and name.endswith("__c")
        else None,
        child_relationship=children + "__r" if kind == "reference" else None,
        picklist=tuple(spec.get("picklist", ())),
        restricted_picklist=bool(spec.get("restricted", False)),
        precision=int(spec.get("precision", 18 if kind in NUMBER_TYPES - {"int"} else 0)),
        scale=int(spec.get("scale", 2 if kind in ("currency",) else 0)),
        default_value=spec.get("default"), defaulted_on_create="default" in spec)


def _with_system_fields(obj: SObject) -> SObject:
    system = [
        SField("Id", "id", "Record ID", length=18, nillable=False, createable=False,
               updateable=False, defaulted_on_create=True, unique=True),
        SField("IsDeleted", "boolean", "Deleted", nillable=False, createable=False,
               updateable=False, defaulted_on_create=True),
        SField("CreatedDate", "datetime", "Created Date", nillable=False, createable=False,
               updateable=False, defaulted_on_create=True),
        SField("CreatedById", "reference", "Created By ID", length=18, nillable=False,
               createable=False, updateable=False, defaulted_on_create=True,
               reference_to=("User",), relationship_name="CreatedBy"),
        SField("LastModifiedDate", "datetime", "Last Modified Date", nillable=False,
               createable=False, updateable=False, defaulted_on_create=True),
        SField("LastModifiedById", "reference", "Last Modified By ID", length=18,
               nillable=False, createable=False, updateable=False, defaulted_on_create=True,
               reference_to=("User",), relationship_name="LastModifiedBy"),
        SField("SystemModstamp", "datetime", "System Modstamp", nillable=False,
               createable=False, updateable=False, defaulted_on_create=True),
    ]
    for f in system:
        obj.add(f)
    if obj.ownable:
        obj.add(SField("OwnerId", "reference", "Owner ID", length=18, nillable=False,
                       defaulted_on_create=True, reference_to=("User",), relationship_name="Owner"))
    return obj


def _text(name: str, length: int = 255, **extra: Any) -> SField:
    return SField(name, extra.pop("type", "string"), length=length, **extra)


def _picklist(name: str, values: tuple[str, ...], **extra: Any) -> SField:
    # A standard picklist is unrestricted, as in a real org: the API also takes values
    # outside its standard value set.
    return SField(name, "picklist", length=255, picklist=values, **extra)


def _phone(name: str) -> SField:
    return SField(name, "phone", length=40)


def _ref(name: str, target: str, children: str | None = None, **extra: Any) -> SField:
    return SField(name, "reference", length=18, reference_to=(target,),
                  relationship_name=name.removesuffix("Id"), child_relationship=children, **extra)


def _address(prefix: str, street: str = "Street") -> list[SField]:
    """The parts of an address (BillingStreet, BillingCity, ...), as Salesforce sizes them."""
    return [_text(prefix + street, 255, type="textarea"), _text(prefix + "City", 40),
            _text(prefix + "State", 80), _text(prefix + "PostalCode", 20),
            _text(prefix + "Country", 80)]


def _read_only(new: SField) -> SField:
    return replace(new, createable=False, updateable=False)


# Salesforce's standard value sets, as a new org has them.
INDUSTRIES = (
    "Agriculture", "Apparel", "Banking", "Biotechnology", "Chemicals", "Communications",
    "Construction", "Consulting", "Education", "Electronics", "Energy", "Engineering",
    "Entertainment", "Environmental", "Finance", "Food & Beverage", "Government", "Healthcare",
    "Hospitality", "Insurance", "Machinery", "Manufacturing", "Media", "Not For Profit",
    "Recreation", "Retail", "Shipping", "Technology", "Telecommunications", "Transportation",
    "Utilities", "Other")
ACCOUNT_TYPES = ("Prospect", "Customer - Direct", "Customer - Channel",
                 "Channel Partner / Reseller", "Installation Partner", "Technology Partner",
                 "Other")
RATINGS = ("Hot", "Warm", "Cold")
SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
OWNERSHIPS = ("Public", "Private", "Subsidiary", "Other")
SALUTATIONS = ("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.", "Mx.")
LEAD_STATUSES = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted",
                 "Closed - Not Converted")
STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Value Proposition",
          "Id. Decision Makers", "Perception Analysis", "Proposal/Price Quote",
          "Negotiation/Review", "Closed Won", "Closed Lost")
OPPORTUNITY_TYPES = ("Existing Customer - Upgrade", "Existing Customer - Replacement",
                     "Existing Customer - Downgrade", "New Customer")
FORECAST_CATEGORIES = ("Omitted", "Pipeline", "Best Case", "Commit", "Closed")
CASE_STATUSES = ("New", "Working", "Escalated", "Closed")
CASE_ORIGINS = ("Phone", "Email", "Web")
CASE_PRIORITIES = ("High", "Medium", "Low")
CASE_REASONS = ("Installation", "Equipment Complexity", "Performance", "Breakdown",
                "Equipment Design", "Feedback", "Other")
CASE_TYPES = ("Mechanical", "Electrical", "Electronic", "Structural", "Other")


def _standard_objects() -> list[SObject]:
    def make(name: str, prefix: str, fields: list[SField], **extra: Any) -> SObject:
        obj = _with_system_fields(SObject(name, prefix, name, **extra))
        for f in fields:
            obj.add(f)
        return obj

    compound_name = SField("Name", "string", "Full Name", length=121, createable=False,
                           updateable=False, name_field=True, defaulted_on_create=True)
    opt_outs = [SField(name, "boolean", nillable=False, defaulted_on_create=True,
                       default_value=False)
                for name in ("HasOptedOutOfEmail", "HasOptedOutOfFax", "DoNotCall")]
    description = _text("Description", 32000, type="textarea")
    return [
        make("Account", "001", [
            _text("Name", nillable=False, name_field=True),
            _text("AccountNumber", 40), _picklist("Type", ACCOUNT_TYPES),
            _picklist("Industry", INDUSTRIES), _picklist("Rating", RATINGS),
            _picklist("AccountSource", SOURCES), _picklist("Ownership", OWNERSHIPS),
            _phone("Phone"), _phone("Fax"), _text("Website", 255, type="url"),
            _text("Site", 80), _text("TickerSymbol", 20), _text("Sic", 20),
            _text("SicDesc", 80), _text("YearStarted", 4),
            *_address("Billing"), *_address("Shipping"),
            SField("AnnualRevenue", "currency", precision=18, scale=0),
            SField("NumberOfEmployees", "int", precision=8),
            description, _ref("ParentId", "Account", "ChildAccounts"),
        ]),
        make("Contact", "003", [
            _text("LastName", 80, nillable=False), _text("FirstName", 40),
            _picklist("Salutation", SALUTATIONS), compound_name,
            _ref("AccountId", "Account", "Contacts"), _text("Email", 80, type="email"),
            _phone("Phone"), _phone("MobilePhone"), _phone("HomePhone"), _phone("OtherPhone"),
            _phone("Fax"), _text("Title", 128), _text("Department", 80),
            _text("AssistantName", 40), _phone("AssistantPhone"),
            _picklist("LeadSource", SOURCES), _ref("ReportsToId", "Contact"),
            *_address("Mailing"), *_address("Other"),
            SField("Birthdate", "date"), *opt_outs, description,
        ]),
        make("Lead", "00Q", [
            _text("LastName", 80, nillable=False), _text("FirstName", 40),
            _picklist("Salutation", SALUTATIONS), compound_name,
            _text("Company", 255, nillable=False), _text("Title", 128),
            _text("Email", 80, type="email"), _phone("Phone"), _phone("MobilePhone"),
            _phone("Fax"), _text("Website", 255, type="url"),
            _picklist("Status", LEAD_STATUSES, nillable=False, defaulted_on_create=True,
                      default_value="Open - Not Contacted"),
            _picklist("LeadSource", SOURCES), _picklist("Industry", INDUSTRIES),
            _picklist("Rating", RATINGS), *_address(""),
            SField("AnnualRevenue", "currency", precision=18, scale=0),
            SField("NumberOfEmployees", "int", precision=8), *opt_outs, description,
            SField("IsConverted", "boolean", nillable=False, updateable=False,
                   defaulted_on_create=True, default_value=False),
            _read_only(SField("ConvertedDate", "date")),
            _read_only(_ref("ConvertedAccountId", "Account")),
            _read_only(_ref("ConvertedContactId", "Contact")),
            _read_only(_ref("ConvertedOpportunityId", "Opportunity")),
        ]),
        make("Opportunity", "006", [
            _text("Name", 120, nillable=False, name_field=True),
            _picklist("StageName", STAGES, nillable=False),
            SField("CloseDate", "date", nillable=False),
            _ref("AccountId", "Account", "Opportunities"),
            SField("Amount", "currency", precision=18, scale=2),
            SField("Probability", "percent", precision=3),
            _picklist("Type", OPPORTUNITY_TYPES), _picklist("LeadSource", SOURCES),
            _picklist("ForecastCategoryName", FORECAST_CATEGORIES),
            _text("NextStep", 255), SField("TotalOpportunityQuantity", "double", precision=18,
                                           scale=2),
            description,
            SField("IsWon", "boolean", nillable=False, createable=False, updateable=False,
                   defaulted_on_create=True),
            SField("IsClosed", "boolean", nillable=False, createable=False, updateable=False,
                   defaulted_on_create=True),
        ]),
        make("Case", "500", [
            _text("Subject", 255),
            _picklist("Status", CASE_STATUSES, nillable=False, defaulted_on_create=True,
                      default_value="New"),
            _picklist("Priority", CASE_PRIORITIES), _picklist("Origin", CASE_ORIGINS),
            _picklist("Reason", CASE_REASONS), _picklist("Type", CASE_TYPES),
            _ref("AccountId", "Account", "Cases"), _ref("ContactId", "Contact", "Cases"),
            _ref("ParentId", "Case", "Cases"),
            _text("SuppliedName", 80), _text("SuppliedEmail", 80, type="email"),
            _text("SuppliedPhone", 40), _text("SuppliedCompany", 80),
            SField("IsEscalated", "boolean", nillable=False, defaulted_on_create=True,
                   default_value=False),
            SField("IsClosed", "boolean", nillable=False, createable=False, updateable=False,
                   defaulted_on_create=True),
            description,
            _text("CaseNumber", 30, createable=False, updateable=False, defaulted_on_create=True),
        ]),
        make("Product2", "01t", [
            _text("Name", 255, nillable=False, name_field=True), _text("ProductCode", 255),
            SField("IsActive", "boolean", nillable=False, defaulted_on_create=True,
                   default_value=False),
            _text("Description", 4000, type="textarea"),
        ]),
        make("User", "005", [
            _text("Username", 80, nillable=False, unique=True), _text("LastName", 80, nillable=False),
            _text("FirstName", 40), compound_name, _text("Email", 128, type="email", nillable=False),
            _text("Alias", 8, nillable=False),
            SField("IsActive", "boolean", nillable=False, defaulted_on_create=True, default_value=True),
        ], ownable=False),
        make("Organization", "00D", [
            _text("Name", 80, createable=False, updateable=False),
            SField("IsSandbox", "boolean", nillable=False, createable=False, updateable=False),
            _text("OrganizationType", 40, createable=False, updateable=False),
            _text("InstanceName", 5, createable=False, updateable=False),
            _text("NamespacePrefix", 15, createable=False, updateable=False),
            _read_only(SField("TrialExpirationDate", "datetime")),
        ], ownable=False, readonly=True),
    ]

