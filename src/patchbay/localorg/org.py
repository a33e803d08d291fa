"""The org: records with Salesforce's validation, system fields and change log; users,
sessions, API limits and a controllable clock. The HTTP layer (`server.py`) only
translates requests to these calls and `OrgError`s to Salesforce's error bodies.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchbay import sfid
from patchbay.localorg.cursors import Cursors
from patchbay.localorg.schema import OrgSchema, SField, SObject
from patchbay.localorg.storage import Storage
from patchbay.localorg.values import FieldValueError, from_storage, stored_datetime, to_storage

ORG_ID = sfid.make("00D", 1)
INSTANCE_NAME = "LOCAL"


def same_secret(given: str, expected: str) -> bool:
    """Compare a secret in constant time, so the answer's timing tells nothing about it."""
    return hmac.compare_digest(given.encode(), expected.encode())


class OrgError(Exception):
    """A request the org refuses: HTTP status, Salesforce error code, message, fields."""

    def __init__(self, status: int, code: str, message: str,
                 fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            error["fields"] = self.fields
        return error


class Clock:
    """The org's time: real, or set and advanced by tests through the control API."""

    def __init__(self) -> None:
        self._fixed: dt.datetime | None = None
        self._offset = dt.timedelta()

    def now(self) -> dt.datetime:
        base = self._fixed if self._fixed is not None else dt.datetime.now(dt.UTC)
        return base + self._offset

    def set(self, when: dt.datetime) -> None:
        self._fixed, self._offset = when.astimezone(dt.UTC), dt.timedelta()

    def advance(self, seconds: float) -> None:
        self._offset += dt.timedelta(seconds=seconds)

    def real(self) -> None:
        self._fixed, self._offset = None, dt.timedelta()


@dataclass
class User:
    username: str
    password: str
    security_token: str
    id: str = ""
    first_name: str = "Integration"
    last_name: str = "User"


@dataclass
class ConnectedApp:
    consumer_key: str
    consumer_secret: str
    run_as: str
    """Username whose session client-credentials tokens get."""


@dataclass
class Session:
    token: str
    user_id: str
    expires_at: dt.datetime


@dataclass
class Limits:
    max_requests: int = 15000
    used: int = 0


@dataclass
class OrgConfig:
    users: list[User] = field(default_factory=lambda: [
        User("integration@patchbay.local", "password", "TOKEN")])
    apps: list[ConnectedApp] = field(default_factory=lambda: [
        ConnectedApp("patchbay-local-key", "patchbay-local-secret", "integration@patchbay.local")])
    session_seconds: int = 7200
    custom_schema: Path | Mapping[str, Any] | None = None
    database: str = ":memory:"
    public_url: str = "https://emulator.local"
    cdc_retention_hours: float = 72
    """How long change events can be replayed, by the org's clock (Salesforce keeps 72 h)."""
    control_token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    """The bearer token the control API under /_emulator/ asks for (new for every org)."""


class Org:
    """One local org."""

    def __init__(self, config: OrgConfig | None = None) -> None:
        self.config = config or OrgConfig()
        self.clock = Clock()
        self.schema = OrgSchema.seed(self.config.custom_schema)
        self.storage = Storage(self.schema, self.config.database)
        self.limits = Limits()
        self.sessions: dict[str, Session] = {}
        self.cursors = Cursors()
        self._lock = threading.Lock()
        self.users: dict[str, User] = {}
        self._seed()

    def _seed(self) -> None:
        user_object = self.schema.get("User")
        org_object = self.schema.get("Organization")
        assert user_object is not None and org_object is not None
        now = stored_datetime(self.clock.now())
        for user in self.config.users:
            found = self.storage.find(user_object, _field(user_object, "Username"), user.username)
            if found:
                user.id = found[0]
            else:
                user.id = self.storage.new_id(user_object)
                self.storage.insert(user_object, {
                    "Id": user.id, "Username": user.username, "LastName": user.last_name,
                    "FirstName": user.first_name, "Name": f"{user.first_name} {user.last_name}",
                    "Email": user.username, "Alias": user.username[:8], "IsActive": 1,
                    "IsDeleted": 0, "CreatedDate": now, "LastModifiedDate": now,
                    "SystemModstamp": now, "CreatedById": user.id, "LastModifiedById": user.id})
            self.users[user.username.lower()] = user
        if self.storage.get(org_object, ORG_ID) is None:
            first = self.config.users[0].id
            self.storage.insert(org_object, {
                "Id": ORG_ID, "Name": "patchbay local org", "IsSandbox": 0,
                "OrganizationType": "Developer Edition", "InstanceName": INSTANCE_NAME,
                "IsDeleted": 0, "CreatedDate": now,
                "LastModifiedDate": now, "SystemModstamp": now, "CreatedById": first,
                "LastModifiedById": first})

    def reset(self) -> None:
        self.storage.reset()
        self.sessions.clear()
        self.limits.used = 0
        self._seed()

    def seed(self, records: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, list[str]]:
        """Create records as the first user, object by object, in one transaction."""
        session = self._open_session(self.config.users[0])
        created: dict[str, list[str]] = {}
        with self.storage.transaction():
            for name, bodies in records.items():
                obj = self.sobject(name)
                created[obj.name] = [self.create(obj, body, session, "seed") for body in bodies]
        return created

    # -- sessions -------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> Session:
        """Password login; the security token may be appended to the password."""
        user = self.users.get(username.lower())
        if user is None or not (same_secret(password, user.password)
                                or same_secret(password, user.password + user.security_token)):
            raise OrgError(401, "INVALID_LOGIN",
                           "Invalid username, password, security token; or user locked out.")
        return self._open_session(user)

    def client_credentials(self, key: str, secret: str) -> Session:
        app = next((a for a in self.config.apps if a.consumer_key == key), None)
        if app is None:
            raise OrgError(400, "invalid_client_id", "client identifier invalid")
        if not same_secret(secret, app.consumer_secret):
            raise OrgError(400, "invalid_client", "invalid client credentials")
        return self._open_session(self.users[app.run_as.lower()])

    def app_accepts(self, key: str, secret: str) -> bool:
        """Whether `secret` is the consumer secret of the connected app with this key."""
        app = next((a for a in self.config.apps if a.consumer_key == key), None)
        return app is not None and same_secret(secret, app.consumer_secret)

    def _open_session(self, user: User) -> Session:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(24)}"
        session = Session(token, user.id, self.clock.now() +
                          dt.timedelta(seconds=self.config.session_seconds))
        with self._lock:
            self.sessions[token] = session
        return session

    def session(self, token: str | None) -> Session:
        found = self.sessions.get(token or "")
        if found is None or found.expires_at <= self.clock.now():
            raise OrgError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        return found

    def expire_sessions(self) -> None:
        with self._lock:
            self.sessions.clear()

    def count_request(self) -> None:
        """Count one API call; refuse it once the daily allowance is spent."""
        with self._lock:
            self.limits.used += 1
            if self.limits.used > self.limits.max_requests:
                raise OrgError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")

    # -- objects and records --------------------------------------------------------------------

    def sobject(self, name: str) -> SObject:
        obj = self.schema.get(name)
        if obj is None:
            raise OrgError(404, "NOT_FOUND", "The requested resource does not exist")
        return obj

    def record_id(self, obj: SObject, raw: str) -> str | None:
        """The 18-character id of `raw` if it is an id of this object."""
        value = sfid.to18(raw)
        return value if value is not None and sfid.prefix_of(value) == obj.key_prefix else None

    def _live(self, obj: SObject, record_id: str) -> dict[str, Any]:
        """A record's stored values; 404 when there is none or it is deleted."""
        stored = self.storage.get(obj, record_id)
        if stored is None:
            raise OrgError(404, "NOT_FOUND", "The requested resource does not exist")
        if stored["IsDeleted"]:
            raise OrgError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return stored

    def read(self, obj: SObject, record_id: str, fields: list[str] | None = None,
             version: str = "59.0") -> dict[str, Any]:
        stored = self._live(obj, record_id)
        chosen = list(obj) if fields is None else [self._known(obj, f) for f in fields]
        if fields is not None and not any(f.name == "Id" for f in chosen):
            chosen.insert(0, _field(obj, "Id"))
        record: dict[str, Any] = {"attributes": {
            "type": obj.name, "url": f"/services/data/v{version}/sobjects/{obj.name}/{record_id}"}}
        for f in chosen:
            record[f.name] = from_storage(f, stored.get(f.name))
        return record

    def create(self, obj: SObject, body: Mapping[str, Any], session: Session,
               origin: str = "rest") -> str:
        self._writable(obj, "insert")
        values = self._values(obj, body, creating=True)
        now = stored_datetime(self.clock.now())
        with self.storage.transaction():
            record_id = self.storage.new_id(obj)
            for f in obj:
                if f.name not in values and f.default_value is not None:
                    values[f.name] = to_storage(f, f.default_value)
            values.update({"Id": record_id, "IsDeleted": 0, "CreatedDate": now,
                           "LastModifiedDate": now, "SystemModstamp": now,
                           "CreatedById": session.user_id, "LastModifiedById": session.user_id})
            if obj.field("OwnerId") is not None and values.get("OwnerId") is None:
                values["OwnerId"] = session.user_id
            _derive(obj, values, values)
            missing = [f.name for f in obj if f.required and values.get(f.name) is None]
            if missing:
                raise OrgError(400, "REQUIRED_FIELD_MISSING",
                               f"Required fields are missing: [{', '.join(missing)}]", missing)
            self._check_unique(obj, values, None)
            self.storage.insert(obj, values)
            self.storage.log(obj, record_id, "created", list(values), now, origin,
                             _api_values(obj, values, list(values)), session.user_id)
        return record_id

    def update(self, obj: SObject, record_id: str, body: Mapping[str, Any], session: Session,
               origin: str = "rest") -> None:
        self._writable(obj, "update")
        current = self._live(obj, record_id)
        values = self._values(obj, body, creating=False)
        now = stored_datetime(self.clock.now())
        with self.storage.transaction():
            merged = {**current, **values}
            _derive(obj, merged, values)
            missing = [f.name for f in obj if f.name in values and not f.nillable
                       and values[f.name] is None]
            if missing:
                raise OrgError(400, "REQUIRED_FIELD_MISSING",
                               f"Required fields are missing: [{', '.join(missing)}]", missing)
            self._check_unique(obj, values, record_id)
            changed = [n for n, v in values.items() if current.get(n) != v]
            values.update({"LastModifiedDate": now, "SystemModstamp": now,
                           "LastModifiedById": session.user_id})
            # A change event names LastModifiedById only when another user made this change.
            event_fields = [*changed, "LastModifiedDate"] + \
                (["LastModifiedById"] if current.get("LastModifiedById") != session.user_id else [])
            self.storage.update(obj, record_id, values)
            self.storage.log(obj, record_id, "updated", changed, now, origin,
                             _api_values(obj, values, event_fields), session.user_id)

    def delete(self, obj: SObject, record_id: str, origin: str = "rest",
               session: Session | None = None) -> None:
        """Soft-delete a record; `session` names the deleting user for the change log (the
        org's first user when the caller has none to give)."""
        self._writable(obj, "delete")
        self._live(obj, record_id)
        now = stored_datetime(self.clock.now())
        with self.storage.transaction():
            self.storage.update(obj, record_id, {"IsDeleted": 1, "_DeletedAt": now,
                                                 "SystemModstamp": now})
            self.storage.log(obj, record_id, "deleted", [], now, origin, {},
                             session.user_id if session else self.config.users[0].id)

    def undelete(self, obj: SObject, record_id: str, origin: str = "soap",
                 session: Session | None = None) -> None:
        """Restore a record from the recycle bin, as the SOAP and Apex undelete calls do (REST
        has none): live again under its id, with a new SystemModstamp, logged as undeleted
        with all its values. `session` names the restoring user, as for `delete`."""
        self._writable(obj, "undelete")
        stored = self.storage.get(obj, record_id)
        if stored is None:
            raise OrgError(404, "NOT_FOUND", "The requested resource does not exist")
        if not stored["IsDeleted"]:
            raise OrgError(400, "UNDELETE_FAILED", "Entity is not in the recycle bin")
        # A live record may have taken a unique value while this one was in the recycle bin.
        self._check_unique(obj, stored, record_id)
        now = stored_datetime(self.clock.now())
        user_id = session.user_id if session else self.config.users[0].id
        restored = {"IsDeleted": 0, "_DeletedAt": None, "LastModifiedDate": now,
                    "SystemModstamp": now, "LastModifiedById": user_id}
        with self.storage.transaction():
            self.storage.update(obj, record_id, restored)
            names = [f.name for f in obj]
            self.storage.log(obj, record_id, "undeleted", names, now, origin,
                             _api_values(obj, {**stored, **restored}, names), user_id)

    def upsert(self, obj: SObject, field_name: str, value: str, body: Mapping[str, Any],
               session: Session, origin: str = "rest") -> tuple[str, bool]:
        """Create or update by an external id (or Id); returns (id, created)."""
        key = self.external_id_field(obj, field_name)
        if key.name == "Id":
            record_id = self.record_id(obj, value)
            if record_id is None or self.storage.get(obj, record_id) is None:
                raise OrgError(404, "NOT_FOUND", "The requested resource does not exist")
            self.update(obj, record_id, body, session, origin)
            return record_id, False
        if any(k.lower() == key.name.lower() for k in body):
            raise OrgError(400, "INVALID_FIELD", f"Field {key.name} is not allowed in the body "
                                                 "of an upsert by that field", [key.name])
        matches = self.matches(obj, key, value)
        if len(matches) > 1:
            raise MultipleMatches(obj, matches)
        if matches:
            self.update(obj, matches[0], body, session, origin)
            return matches[0], False
        return self.create(obj, {**body, key.name: value}, session, origin), True

    def external_id_field(self, obj: SObject, name: str) -> SField:
        found = obj.field(name)
        if found is None or not found.id_lookup:
            raise OrgError(404, "NOT_FOUND", "Provided external ID field does not exist or is "
                                             f"not accessible: {name}")
        return found

    def matches(self, obj: SObject, key: SField, value: Any) -> list[str]:
        try:
            stored = to_storage(key, value) if value is not None else None
        except FieldValueError as exc:
            raise OrgError(400, exc.code, str(exc), [key.name]) from None
        return self.storage.find(obj, key, stored)

    # -- validation -----------------------------------------------------------------------------

    def _writable(self, obj: SObject, operation: str) -> None:
        if obj.readonly:
            raise OrgError(400, "INVALID_TYPE_FOR_OPERATION",
                           f"entity type {obj.name} does not support {operation}")

    def _known(self, obj: SObject, name: str) -> SField:
        found = obj.field(name)
        if found is None:
            raise OrgError(400, "INVALID_FIELD",
                           f"No such column '{name}' on sobject of type {obj.name}")
        return found

    def _values(self, obj: SObject, body: Mapping[str, Any], creating: bool) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, raw in body.items():
            if name == "attributes":
                continue
            if name.lower() == "id":
                raise OrgError(400, "INVALID_FIELD", "The Id field should not be specified in "
                                                     "the sobject data.")
            f = self._known(obj, name)
            if not (f.createable if creating else f.updateable):
                raise OrgError(400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                               f"Unable to create/update fields: {f.name}. Please check the "
                               "security settings of this field and verify that it is "
                               "read/write for your profile or permission set.", [f.name])
            try:
                value = to_storage(f, raw)
            except FieldValueError as exc:
                raise OrgError(400, exc.code, str(exc), [f.name]) from None
            if value is not None and f.type == "picklist" and f.restricted_picklist \
                    and value not in f.picklist:
                raise OrgError(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                               f"{f.label or f.name}: bad value for restricted picklist field: "
                               f"{value}", [f.name])
            if value is not None and f.type == "reference":
                value = self._reference(f, str(value))
            values[f.name] = value
        return values

    def _reference(self, f: SField, raw: str) -> str:
        value = sfid.to18(raw)
        if value is None:
            raise OrgError(400, "MALFORMED_ID", f"{f.label or f.name}: id value of incorrect "
                                                f"type: {raw}", [f.name])
        for target_name in f.reference_to:
            target = self.schema.get(target_name)
            if target is not None and sfid.prefix_of(value) == target.key_prefix:
                stored = self.storage.get(target, value)
                if stored is not None and not stored["IsDeleted"]:
                    return value
        raise OrgError(400, "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {raw}",
                       [f.name])

    def _check_unique(self, obj: SObject, values: Mapping[str, Any], own_id: str | None) -> None:
        for f in obj:
            if (f.unique or f.external_id) and f.name != "Id" and values.get(f.name) is not None:
                clash = [i for i in self.storage.find(obj, f, values[f.name]) if i != own_id]
                if clash and f.unique:
                    raise OrgError(400, "DUPLICATE_VALUE",
                                   f"duplicate value found: {f.name} duplicates value on record "
                                   f"with id: {clash[0]}", [f.name])


class MultipleMatches(OrgError):
    """An external id matches more than one record (HTTP 300)."""

    def __init__(self, obj: SObject, record_ids: list[str]) -> None:
        super().__init__(300, "MULTIPLE_CHOICES", "more than one record matches")
        self.obj, self.record_ids = obj, record_ids


def _field(obj: SObject, name: str) -> SField:
    found = obj.field(name)
    assert found is not None
    return found


def _api_values(obj: SObject, stored: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """The named stored values as the REST API renders them."""
    return {name: from_storage(_field(obj, name), stored.get(name)) for name in names}


def _derive(obj: SObject, record: dict[str, Any], changes: dict[str, Any]) -> None:
    """Fields the org computes: compound names, an opportunity's won/closed flags, a case's
    closed flag."""
    if obj.name in ("Contact", "Lead", "User") and ({"FirstName", "LastName"} & set(changes)
                                                     or "Name" not in record):
        name = " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p)
        record["Name"] = changes["Name"] = name
    if obj.name == "Opportunity" and "StageName" in changes:
        stage = record.get("StageName")
        record["IsWon"] = changes["IsWon"] = int(stage == "Closed Won")
        record["IsClosed"] = changes["IsClosed"] = int(stage in ("Closed Won", "Closed Lost"))
    if obj.name == "Case" and "Status" in changes:
        record["IsClosed"] = changes["IsClosed"] = int(record.get("Status") == "Closed")
    if obj.name == "Case" and record.get("CaseNumber") is None:
        record["CaseNumber"] = changes["CaseNumber"] = f"{int(record['Id'][6:15], 36) % 10**8:08d}"
