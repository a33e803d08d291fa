"""The error tree: the errors of Salesforce, its streaming, value coercion and the HTTP API
are patchbay errors; the in-band marker of a record a system could not give whole is one
name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import patchbay
from patchbay.connectors.base import message_body
from patchbay.elements.conform import converter
from patchbay.errors import (
    ApiError,
    CoercionError,
    ConnectionFailed,
    PatchbayError,
    ReplayIdInvalid,
    SalesforceError,
    SessionExpired,
    StreamingError,
)
from patchbay.model import ERROR_FIELD, RAW_FIELD, FieldType


def test_every_error_patchbay_raises_on_purpose_is_in_the_tree() -> None:
    assert issubclass(SessionExpired, StreamingError)
    assert issubclass(StreamingError, ConnectionFailed)
    for error in (SalesforceError, ReplayIdInvalid, CoercionError, ApiError):
        assert issubclass(error, PatchbayError), error


def test_a_failed_coercion_is_a_patchbay_error_and_still_a_value_error() -> None:
    with pytest.raises(CoercionError, match=r"^'abc' is not an integer$") as failed:
        converter(FieldType.INTEGER)("abc")
    assert isinstance(failed.value, ValueError)


def test_an_api_error_keeps_its_answer() -> None:
    error = ApiError(404, "no integration 'x'", ["x: unknown"], known=["a"])
    assert isinstance(error, PatchbayError)
    assert (error.status, str(error)) == (404, "no integration 'x'")
    assert error.body() == {"error": "no integration 'x'", "problems": ["x: unknown"], "known": ["a"]}


def test_a_message_body_that_is_not_an_object_carries_the_one_error_marker() -> None:
    assert message_body(b"[1]") == {
        ERROR_FIELD: "the body is JSON but not an object (a list)", RAW_FIELD: "[1]"}


def test_the_error_marker_is_spelled_in_one_module() -> None:
    """The marker is defined once (`model.ERROR_FIELD`), so a source that marks a record
    and the pattern that sets it aside cannot drift apart."""
    source = Path(patchbay.__file__).parent
    spelled = sorted(
        str(path.relative_to(source)) for path in source.rglob("*.py")
        if "localorg" not in path.parts
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value == "__error__")
    assert spelled == ["model.py"]


def test_an_error_carries_its_context_and_says_only_what_its_message_does_not() -> None:
    lost = ConnectionFailed("system 'erp' connection lost while writing accounts: timeout",
                            system="erp", object="accounts", run="r-1")
    assert lost.context == {"system": "erp", "object": "accounts", "run": "r-1"}
    assert str(lost) == "system 'erp' connection lost while writing accounts: timeout (run=r-1)"


def test_a_database_that_cannot_be_reached_names_its_system_in_the_context() -> None:
    from patchbay.connectors.sql import SqlConnector
    from patchbay.spec import SystemSpec

    unreachable = SqlConnector(SystemSpec(url="postgresql://nobody@127.0.0.1:1/none", name="erp",
                                          options={"connect_timeout": 1}))
    with pytest.raises(ConnectionFailed, match=r"^cannot reach system 'erp' at ") as refused:
        unreachable.check()
    assert refused.value.context == {"system": "erp"}
    assert "(system=" not in str(refused.value)  # the message names it already


def test_the_consoles_and_outbound_messages_refusals_are_api_errors() -> None:
    """The web console and the Outbound Messages endpoint came after the tree was completed:
    their refusals are API errors too, keeping their status and message."""
    from patchbay.api.console import ConsoleError
    from patchbay.api.outbound import Fault

    refused = ConsoleError(403, "not signed in")
    assert isinstance(refused, ApiError)
    assert (refused.status, refused.message, refused.problems) == (403, "not signed in", [])
    fault = Fault(500, "not recorded now", server=True)
    assert isinstance(fault, ApiError)
    assert (fault.status, fault.message, fault.server) == (500, "not recorded now", True)
