"""SOQL for the local org: the subset of section 4 of the Salesforce API spec, compiled to SQLite.

Three stages, each readable on its own:

1. `lexer` cuts the text into tokens that remember their offset (for the caret in error messages).
2. `parser`, a recursive-descent parser, turns the tokens into the small dataclasses of `syntax`. It
   knows nothing about the schema.
3. `compiler` resolves names against the `OrgSchema`, checks each value against its field's type (date
   literals through `dates`), and writes SQLite SQL with a LEFT JOIN per parent relationship. Values
   only ever travel as `?` parameters.

A parent-to-child subquery (`SELECT Name, (SELECT LastName FROM Contacts) FROM Account`) is compiled
by a compiler of its own against the child object, with the child's reference to the parent as one
more filter; fetching a page runs it once per parent record.

The result, `CompiledQuery` (in `result`), holds the SQL for the matching root Ids (which the server
snapshots for cursors), for `COUNT()` and for `COUNT(path)`, and turns stored rows back into records
shaped as the REST API returns them, or into Bulk API CSV rows.

Text comparisons use SQLite's NOCASE collation, the same as `Storage.find`: case-insensitive for ASCII
letters only.
"""

from __future__ import annotations

import datetime as dt

from patchbay.localorg.schema import OrgSchema
from patchbay.localorg.soql.compiler import Compiler
from patchbay.localorg.soql.errors import SoqlError
from patchbay.localorg.soql.limits import MAX_LENGTH
from patchbay.localorg.soql.parser import Parser
from patchbay.localorg.soql.result import Aggregate, Column, CompiledQuery

__all__ = ["Aggregate", "Column", "CompiledQuery", "SoqlError", "compile"]


def compile(text: str, schema: OrgSchema, *, include_deleted: bool, now: dt.datetime) -> CompiledQuery:
    """Parse and check a SOQL query; raises SoqlError as Salesforce would refuse it.

    `include_deleted` is queryAll (soft-deleted rows too); `now` is the org's clock, for date literals.
    """
    if len(text) > MAX_LENGTH:
        raise SoqlError("MALFORMED_QUERY", f"SOQL statements cannot be longer than {MAX_LENGTH} "
                                           f"characters; this one has {len(text)}.")
    return Compiler(text, schema, include_deleted, now).compile(Parser(text).query())
