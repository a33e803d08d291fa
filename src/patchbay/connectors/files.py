"""Files in a folder: CSV, JSON Lines and Parquet.

A system is a folder (`file:/data/export` or `file:///data/export`); an object is a file in it
(`accounts.csv`, `contacts.jsonl`, `orders.parquet`). The extension gives the format (.csv,
.jsonl or .ndjson, .parquet) unless the system option `format` names one. Other options:
`delimiter` (CSV, default ","), `encoding` (default "utf-8"), `null_values` (CSV texts read as
None, default [""]) and `fields` (the field names of files that do not exist yet, so that a
destination can be described: a list, or a mapping of file name to list; their values are
written with the types they come with, as text in a CSV).

Reads stream: CSV and JSON Lines line by line, Parquet batch by batch, so memory does not grow
with the file. Rows come in file order (sorting on `key` would need the whole file) and the scope
is applied in process. A page's position is the number of source rows consumed so far, so
`after=n` resumes after the first n rows of the file, whether they matched the scope or not.
CSV values stay text, typing being the transform's job, except `null_values`, which read as None.

Broken rows neither stop a read nor vanish. A CSV row with the wrong number of fields, malformed
quoting or bytes the encoding cannot decode, and a JSON Lines line that is not valid JSON or not
an object, is yielded in its page, whatever the scope and `fields`, as a record of two fields:

    {"__error__": "/data/export/accounts.csv line 7: expected 4 fields, found 5",
     "__raw__": "1007,ACME,,DE,extra"}

`__error__` (ERROR_FIELD) names the file and the line the row starts on; `__raw__` (RAW_FIELD)
holds the row's text as in the file, undecodable bytes shown as \\x escapes. The migration pattern
sets such records aside as rejects. They count as rows for positions and for `count`; `get`
skips them. A broken CSV row that spans lines (an unbalanced quote runs on until a quote
closes it or the file ends) is only its first line: reading starts again on the next line,
so the rows after it are read, and counted, as rows.

Writes: `insert` appends, without looking for the key in the file (use `upsert` for that); a new
CSV or Parquet file takes the first record's fields, and a later record with a field the file
lacks is REJECTED with code UNKNOWN_FIELD. `upsert`, `update`, `delete`, and any write to
Parquet, rewrite the file into a temporary file in the same folder and rename it over the
original, so that readers never see half a file (a temporary file a killed process left
behind is removed when the folder is next opened); rows the batch does not touch, broken ones
included, are copied unchanged. Values are written as text the reader gives back: dates and
datetimes as ISO text, Decimals as strings, booleans as true/false in CSV, nested values as JSON.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any, ClassVar, TextIO

from pydantic import Field

from patchbay.atomic import remove_stale, replacing
from patchbay.compare import same_values
from patchbay.connectors.base import Capability, Connector, ConnectorOptions, completed, last_per_key
from patchbay.errors import ConnectionFailed, SpecError
from patchbay.model import (
    ERROR_FIELD,
    RAW_FIELD,
    FieldSchema,
    FieldType,
    KeyValue,
    ObjectSchema,
    Operation,
    Outcome,
    Page,
    Position,
    Record,
    Status,
)
from patchbay.scope import BoundScope, fields_of, to_predicate
from patchbay.spec import SystemSpec, suggest

_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_FORMAT_NAMES = {"csv": "csv", "jsonl": "jsonl", "ndjson": "jsonl", "parquet": "parquet"}
_DESCRIBE_LINES = 1000
_PARQUET_BATCH_ROWS = 10_000
# Undecodable bytes are read as lone surrogates (errors="surrogateescape"), so that one bad
# byte marks its own row broken instead of ending the read.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class _Broken:
    """A row the file could not give whole."""

    message: str
    raw: str

    def record(self) -> Record:
        return {ERROR_FIELD: self.message, RAW_FIELD: self.raw}


_Row = Record | _Broken


class FileOptions(ConnectorOptions):
    format: str | None = Field(None, description="The format of every file (csv, jsonl, ndjson, "
                               "parquet); by default each file's extension says.")
    delimiter: str = Field(",", description="The field delimiter of CSV files: one character.")
    encoding: str = Field("utf-8", description="The text encoding of CSV and JSON Lines files.")
    null_values: str | list[str] = Field([""], description="CSV texts read as null.")
    fields: list[str] | dict[str, list[str]] | None = Field(
        None, description="The field names of files that do not exist yet, so that a destination "
        "can be described: a list, or a mapping of file name to list.")


class FileConnector(Connector):
    schemes: ClassVar[tuple[str, ...]] = ("file",)
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.READ, Capability.WRITE, Capability.GET, Capability.DESCRIBE})
    options_model: ClassVar[type[ConnectorOptions]] = FileOptions

    def __init__(self, system: SystemSpec) -> None:
        super().__init__(system)
        self.folder = _folder(system)
        options = system.options
        self._format_option = _format_option(self.name, options.get("format"))
        encoding = _encoding(self.name, options.get("encoding", "utf-8"))
        self._formats: dict[str, _Format] = {
            "csv": _Csv(encoding, _delimiter(self.name, options.get("delimiter", ",")),
                        _null_values(self.name, options.get("null_values", [""]))),
            "jsonl": _JsonLines(encoding),
            "parquet": _Parquet(),
        }
        self._declared_fields = _declared_fields(self.name, options.get("fields"))
        if self.folder.is_dir():  # the copies a process killed mid-write left behind
            remove_stale(self.folder)

    # -- files ----------------------------------------------------------------------------------

    def check(self) -> None:
        if not self.folder.is_dir():
            raise ConnectionFailed(f"system '{self.name}': folder {self.folder} does not exist")

    def _file(self, object: str) -> tuple[Path, _Format]:
        relative = PurePath(object)
        if not object or relative.is_absolute() or ".." in relative.parts:
            raise SpecError(f"system '{self.name}': object '{object}' must name a file inside "
                            f"{self.folder}")
        name = self._format_option or _EXTENSIONS.get(relative.suffix.lower())
        if name is None:
            raise SpecError(f"system '{self.name}': cannot tell the format of '{object}' from its "
                            f"extension; use .csv, .jsonl, .ndjson or .parquet, or set the "
                            f"system option 'format'")
        self.check()
        return self.folder / relative, self._formats[name]

    def _existing(self, object: str) -> tuple[Path, _Format]:
        path, fmt = self._file(object)
        if not path.is_file():
            known = [p.name for p in self.folder.iterdir() if p.is_file()]
            raise SpecError(f"system '{self.name}' has no file '{object}' in {self.folder}"
                            f"{suggest(object, known)}")
        return path, fmt

    def _known(self, path: Path, fmt: _Format, named: Sequence[str]) -> list[str]:
        """`named` without repeats, once each is known to be a field of the file."""
        declared = fmt.names(path)
        if declared is not None:
            for name in named:
                if name not in declared:
                    raise SpecError(f"{path} has no field '{name}'{suggest(name, declared)}")
        return list(dict.fromkeys(named))

    # -- describe -------------------------------------------------------------------------------

    def describe(self, object: str) -> ObjectSchema:
        path, fmt = self._file(object)
        described = fmt.describe(path) if path.is_file() else None
        if described is None:
            names = self._declared_fields
            if isinstance(names, dict):
                names = names.get(object)
            if not names:
                raise SpecError(f"system '{self.name}': file {path} does not exist yet or is "
                                f"empty; create it, or list its fields under the system option "
                                f"'fields'")
            described = {n: FieldSchema(n, fmt.declared_type) for n in names}
        return ObjectSchema(object, described)

    # -- read -----------------------------------------------------------------------------------

    def read(self, object: str, scope: BoundScope | None = None, *, key: str | None = None,
             fields: Sequence[str] | None = None, after: Position = None,
             page_size: int = 1000, columnar: bool = False) -> Iterator[Page]:
        path, fmt = self._existing(object)
        kept = list(dict.fromkeys([*fields, *([key] if key else [])])) if fields else None
        wanted = kept or ([key] if key else [])
        named = self._known(path, fmt, [*wanted, *sorted(fields_of(scope))])
        columns = named if kept else None
        test = to_predicate(scope)
        consumed = int(after or 0)
        page: list[Record] = []
        for row in fmt.rows(path, consumed, columns):
            consumed += 1
            if isinstance(row, _Broken):
                page.append(row.record())
            elif test(row):
                page.append({f: row.get(f) for f in kept} if kept else row)
            if len(page) >= page_size:
                yield Page(page, consumed)
                page = []
        if page:
            yield Page(page, consumed)

    def count(self, object: str, scope: BoundScope | None = None) -> int:
        path, fmt = self._existing(object)
        columns = self._known(path, fmt, sorted(fields_of(scope)))
        test = to_predicate(scope)
        return sum(1 for row in fmt.rows(path, 0, columns) if isinstance(row, _Broken) or test(row))

    def get(self, object: str, key: str, values: Sequence[KeyValue],
            fields: Sequence[str] | None = None) -> dict[KeyValue, Record]:
        path, fmt = self._file(object)
        if not path.is_file():
            return {}
        kept = list(dict.fromkeys([*fields, key])) if fields else None
        named = self._known(path, fmt, kept or [key])
        columns = named if kept else None
        wanted: dict[str, list[KeyValue]] = {}
        for value in values:
            if value is not None:
                wanted.setdefault(_text(value), []).append(value)
        found: dict[KeyValue, Record] = {}
        if not wanted:
            return found
        for row in fmt.rows(path, 0, columns):
            if isinstance(row, _Broken) or row.get(key) is None:
                continue
            for value in wanted.get(_text(row[key]), ()):
                found[value] = {f: row.get(f) for f in kept} if kept else row
        return found

    # -- write ----------------------------------------------------------------------------------

    def write(self, object: str, records: Sequence[Record], operation: Operation,
              key: str) -> list[Outcome]:
        path, fmt = self._file(object)
        if not records:
            return []
        todo, outcomes = last_per_key(records, key, same=_text)
        if todo:
            fmt.write(path, records, todo, operation, key, outcomes)
        return completed(records, key, outcomes)


# -- formats ------------------------------------------------------------------------------------


class _Format(ABC):
    declared_type: ClassVar[FieldType] = FieldType.JSON
    """The type of the fields the option `fields` names: any value, kept as it comes (a
    number stays a number), the file's own format deciding how it is written."""

    @abstractmethod
    def names(self, path: Path) -> list[str] | None:
        """The fields the file declares (CSV header, Parquet schema); None when rows vary."""

    @abstractmethod
    def rows(self, path: Path, skip: int, columns: list[str] | None) -> Iterator[_Row]:
        """Every row after the first `skip`; `columns` is a hint for formats that store columns."""

    @abstractmethod
    def describe(self, path: Path) -> dict[str, FieldSchema] | None:
        """The fields of an existing file; None when it holds nothing to describe them by."""

    @abstractmethod
    def write(self, path: Path, records: Sequence[Record], indexes: list[int],
              operation: Operation, key: str, outcomes: list[Outcome | None]) -> None:
        """Write records[i] for i in `indexes` (keys present and distinct); fill their outcomes."""


class _Batch:
    """The records of one rewrite by key, applied to the rows of the file one by one."""

    def __init__(self, records: Sequence[Record], indexes: list[int], operation: Operation,
                 key: str, stored: Callable[[Record], Record]) -> None:
        self.records = records
        self.operation = operation
        self.key = key
        self.stored = stored
        self.by_key = {_text(records[i][key]): i for i in indexes}
        self.statuses: dict[int, Status] = {}

    def touches(self, keys: Sequence[KeyValue]) -> bool:
        """Whether `apply` would change any of the rows with these keys."""
        return self.operation is not Operation.INSERT and any(
            k is not None and _text(k) in self.by_key for k in keys)

    def apply(self, current: Record) -> Record | None:
        """The row to write in place of `current`: `current` itself when untouched, None to drop."""
        value = current.get(self.key)
        index = None if value is None else self.by_key.get(_text(value))
        if index is None or self.operation is Operation.INSERT:
            return current
        if self.operation is Operation.DELETE:
            self.statuses[index] = Status.DELETED
            return None
        record = self.records[index]
        # Compared as the file would hold the record, so that 42 and "42" in a CSV are the same.
        if same_values(self.stored(record), current):
            self.statuses.setdefault(index, Status.UNCHANGED)
            return current
        self.statuses[index] = Status.UPDATED
        return {**current, **record}

    def created(self) -> list[Record]:
        """The records the file did not hold, which insert and upsert add at its end."""
        if self.operation not in (Operation.INSERT, Operation.UPSERT):
            return []
        missing = [i for i in self.by_key.values() if i not in self.statuses]
        for index in missing:
            self.statuses[index] = Status.CREATED
        return [self.records[i] for i in missing]

    def report(self, outcomes: list[Outcome | None]) -> None:
        for index in self.by_key.values():
            status = self.statuses.get(index)
            value = self.records[index][self.key]
            outcomes[index] = (Outcome(value, status) if status is not None else Outcome(
                value, Status.SKIPPED, "no record with this key", "NOT_FOUND"))


def _skip_all(records: Sequence[Record], indexes: list[int], key: str,
              outcomes: list[Outcome | None]) -> None:
    for index in indexes:
        outcomes[index] = Outcome(records[index][key], Status.SKIPPED, "no record with this key",
                                  "NOT_FOUND")


def _reject(outcomes: list[Outcome | None], index: int, key: KeyValue, reason: str,
            code: str) -> None:
    outcomes[index] = Outcome(key, Status.REJECTED, reason, code)


def _unknown_field(record: Record, names: Sequence[str], path: Path) -> str | None:
    for name in record:
        if name not in names:
            return f"field '{name}' is not in {path}{suggest(name, names)}"
    return None


class _Lines:
    """The lines of a text file, keeping those read since the last `take`; lines given back
    are read again first."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self._taken: list[str] = []
        self._again: list[str] = []
        self.count = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._again.pop() if self._again else next(self._handle)
        self.count += 1
        self._taken.append(line)
        return line

    def take(self) -> list[str]:
        taken, self._taken = self._taken, []
        return taken

    def give_back(self, lines: list[str]) -> None:
        self._again.extend(reversed(lines))
        self.count -= len(lines)


@dataclass(frozen=True, slots=True)
class _CsvRow:
    line: int
    cells: list[str] | None
    """None when the row is broken; `problem` says why."""
    problem: str
    raw: str


class _Csv(_Format):
    declared_type = FieldType.STRING  # a CSV holds text

    def __init__(self, encoding: str, delimiter: str, null_values: list[str]) -> None:
        self.encoding = encoding
        self.delimiter = delimiter
        self.nulls = frozenset(null_values)
        self.null_text = null_values[0] if null_values else ""

    def _parse(self, handle: TextIO) -> Iterator[_CsvRow]:
        """Every non-blank row, header first; a row's raw text includes blank lines before it.

        A broken row that spans lines (malformed quoting, or another number of fields than
        the header) is taken for an unbalanced quote that ran on into the rows after it: its
        first line alone is the broken row, and reading starts again on the next line, so
        the good rows after it are rows again."""
        lines = _Lines(handle)
        # strict: an unclosed quote would otherwise swallow the rest of the file as one field.
        reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        width: int | None = None
        while True:
            start = lines.count + 1
            problem = ""
            try:
                cells: list[str] | None = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                cells, problem = None, str(exc)
            if cells == []:
                continue
            taken = lines.take()
            spans = lines.count - start + 1
            if spans > 1 and (cells is None or (width is not None and len(cells) != width)):
                # Blank lines before the row stay with it; the lines after its first go back.
                lines.give_back(taken[len(taken) - spans + 1:])
                taken = taken[:len(taken) - spans + 1]
                found = problem or f"expected {width} fields, found {len(cells or ())}"
                yield _CsvRow(start, None, f"malformed CSV: an unbalanced quote ran on over "
                                           f"{spans} lines ({found})", "".join(taken))
                continue
            raw = "".join(taken)
            if cells is None:
                yield _CsvRow(start, None, f"malformed CSV: {problem}", raw)
            elif _UNDECODABLE.search(raw):
                yield _CsvRow(start, None, f"bytes that are not valid {self.encoding}", raw)
            else:
                width = len(cells) if width is None else width
                yield _CsvRow(start, cells, "", raw)

    def _open(self, path: Path) -> TextIO:
        return path.open(encoding=self.encoding, errors="surrogateescape", newline="")

    def _header(self, path: Path, rows: Iterator[_CsvRow]) -> tuple[list[str], str] | None:
        """The field names and the line ending of the file, None when it is empty."""
        first = next(rows, None)
        if first is None:
            return None
        if first.cells is None:
            raise SpecError(f"{path} line {first.line}: the header is broken: {first.problem}")
        # A byte order mark (Excel's "CSV UTF-8") is not part of the first name.
        names = [first.cells[0].removeprefix("\ufeff"), *first.cells[1:]]
        doubled = [n for n in dict.fromkeys(names) if names.count(n) > 1]
        if doubled:
            raise SpecError(f"{path}: the header names '{doubled[0]}' more than once")
        return names, "\r\n" if first.raw.endswith("\r\n") else "\n"

    def names(self, path: Path) -> list[str] | None:
        with self._open(path) as handle:
            header = self._header(path, self._parse(handle))
        return header[0] if header else None

    def describe(self, path: Path) -> dict[str, FieldSchema] | None:
        names = self.names(path)
        return {n: FieldSchema(n, FieldType.STRING) for n in names} if names is not None else None

    def rows(self, path: Path, skip: int, columns: list[str] | None) -> Iterator[_Row]:
        with self._open(path) as handle:
            parsed = self._parse(handle)
            header = self._header(path, parsed)
            if header is None:
                return
            names = header[0]
            for row in parsed:
                if skip:
                    skip -= 1
                    continue
                yield self._row(path, names, row)

    def _row(self, path: Path, names: list[str], row: _CsvRow) -> _Row:
        cells = row.cells
        if cells is not None and len(cells) == len(names):
            return {n: None if c in self.nulls else c for n, c in zip(names, cells, strict=True)}
        problem = row.problem if cells is None else (
            f"expected {len(names)} fields, found {len(cells)}")
        return _Broken(f"{path} line {row.line}: {problem}", _shown(row.raw, self.encoding))

    def _cell(self, value: Any) -> str:
        return self.null_text if value is None else _text(value)

    def _line(self, record: Record, names: list[str], newline: str) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=self.delimiter, lineterminator=newline).writerow(
            [self._cell(record.get(n)) for n in names])
        return buffer.getvalue().encode(self.encoding)

    def _stored(self, record: Record) -> Record:
        cells = {n: self._cell(v) for n, v in record.items()}
        return {n: None if c in self.nulls else c for n, c in cells.items()}

    def write(self, path: Path, records: Sequence[Record], indexes: list[int],
              operation: Operation, key: str, outcomes: list[Outcome | None]) -> None:
        header = None
        if path.is_file():
            with self._open(path) as handle:
                header = self._header(path, self._parse(handle))
        if header is None:
            if operation in (Operation.UPDATE, Operation.DELETE):
                _skip_all(records, indexes, key, outcomes)
                return
            names, newline = list(records[indexes[0]]), "\n"
            head = self._line({n: n for n in names}, names, newline)
        else:
            (names, newline), head = header, b""
            if key not in names:
                raise SpecError(f"{path} has no field '{key}'{suggest(key, names)}")
        lines: dict[int, bytes] = {}
        for index in indexes:
            record = records[index]
            unknown = None if operation is Operation.DELETE else _unknown_field(record, names, path)
            if unknown:
                _reject(outcomes, index, record[key], unknown, "UNKNOWN_FIELD")
                continue
            try:
                lines[index] = self._line(record, names, newline)
            except (TypeError, ValueError) as exc:
                _reject(outcomes, index, record[key], f"cannot be written as CSV: {exc}",
                        "INVALID_VALUE")
        if not lines:
            return
        if operation is Operation.INSERT:
            _append(path, head + b"".join(lines.values()), newline.encode(self.encoding))
            for index in lines:
                outcomes[index] = Outcome(records[index][key], Status.CREATED)
            return
        batch = _Batch(records, list(lines), operation, key, self._stored)
        with replacing(path) as temp, temp.open("wb") as out:
            if header is None:
                out.write(head)
            else:
                self._copy_applied(path, names, newline, batch, out)
            for record in batch.created():
                out.write(self._line(record, names, newline))
        batch.report(outcomes)

    def _copy_applied(self, path: Path, names: list[str], newline: str, batch: _Batch,
                      out: io.BufferedWriter) -> None:
        """Copy the file row by row, header and broken rows as they are, applying the batch."""
        with self._open(path) as handle:
            for number, row in enumerate(self._parse(handle)):
                current = self._row(path, names, row) if number else None
                applied = batch.apply(current) if isinstance(current, dict) else current
                if applied is current:
                    raw = row.raw if row.raw.endswith(("\n", "\r")) else row.raw + newline
                    out.write(raw.encode(self.encoding, "surrogateescape"))
                elif isinstance(applied, dict):
                    out.write(self._line(applied, names, newline))


class _JsonLines(_Format):
    def __init__(self, encoding: str) -> None:
        self.encoding = encoding

    def _parse(self, path: Path) -> Iterator[tuple[_Row, bytes]]:
        """Every non-blank line as a record or what is wrong with it, with the line's bytes."""
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw.decode(self.encoding).lstrip("\ufeff"))
                except UnicodeDecodeError:
                    problem = f"bytes that are not valid {self.encoding}"
                except json.JSONDecodeError as exc:
                    problem = f"not valid JSON: {exc.msg} at column {exc.colno}"
                else:
                    if isinstance(value, dict):
                        yield value, raw
                        continue
                    problem = f"a JSON {_json_kind(value)} where an object was expected"
                yield _Broken(f"{path} line {number}: {problem}", _shown(raw, self.encoding)), raw

    def names(self, path: Path) -> list[str] | None:
        return None

    def rows(self, path: Path, skip: int, columns: list[str] | None) -> Iterator[_Row]:
        for row, _ in self._parse(path):
            if skip:
                skip -= 1
                continue
            yield row

    def describe(self, path: Path) -> dict[str, FieldSchema] | None:
        kinds: dict[str, set[FieldType]] = {}
        for number, (row, _) in enumerate(self._parse(path)):
            if number == _DESCRIBE_LINES:
                break
            if isinstance(row, dict):
                for name, value in row.items():
                    seen = kinds.setdefault(name, set())
                    if value is not None:
                        seen.add(_json_field_type(value))
        if not kinds:
            return None
        return {name: FieldSchema(name, _one_type(seen)) for name, seen in kinds.items()}

    def _line(self, record: Record) -> bytes:
        text = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                          default=_json_default)
        return (text + "\n").encode(self.encoding)

    def _stored(self, record: Record) -> Record:
        stored: Record = json.loads(self._line(record).decode(self.encoding))
        return stored

    def write(self, path: Path, records: Sequence[Record], indexes: list[int],
              operation: Operation, key: str, outcomes: list[Outcome | None]) -> None:
        exists = path.is_file()
        if not exists and operation in (Operation.UPDATE, Operation.DELETE):
            _skip_all(records, indexes, key, outcomes)
            return
        lines: dict[int, bytes] = {}
        for index in indexes:
            try:
                lines[index] = self._line(records[index])
            except (TypeError, ValueError) as exc:
                _reject(outcomes, index, records[index][key],
                        f"cannot be written as JSON: {exc}", "INVALID_VALUE")
        if not lines:
            return
        if operation is Operation.INSERT:
            _append(path, b"".join(lines.values()), "\n".encode(self.encoding))
            for index in lines:
                outcomes[index] = Outcome(records[index][key], Status.CREATED)
            return
        batch = _Batch(records, list(lines), operation, key, self._stored)
        with replacing(path) as temp, temp.open("wb") as out:
            if exists:
                for row, raw in self._parse(path):
                    applied = batch.apply(row) if isinstance(row, dict) else row
                    if applied is row:
                        out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                    elif isinstance(applied, dict):
                        out.write(self._line(applied))
            for record in batch.created():
                out.write(self._line(record))
        batch.report(outcomes)


class _Parquet(_Format):
    def names(self, path: Path) -> list[str] | None:
        _, pq = _arrow()
        names: list[str] = pq.read_schema(path).names
        return names

    def rows(self, path: Path, skip: int, columns: list[str] | None) -> Iterator[_Row]:
        _, pq = _arrow()
        with pq.ParquetFile(path) as parquet:
            groups: list[int] = []
            for index in range(parquet.num_row_groups):
                size = parquet.metadata.row_group(index).num_rows
                # Whole row groups before the position are passed over without being read.
                if not groups and skip >= size:
                    skip -= size
                else:
                    groups.append(index)
            if not groups:
                return
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=groups,
                                              columns=columns):
                if skip:
                    dropped = min(skip, batch.num_rows)
                    batch = batch.slice(dropped)
                    skip -= dropped
                yield from batch.to_pylist()

    def describe(self, path: Path) -> dict[str, FieldSchema] | None:
        pa, pq = _arrow()
        schema = pq.read_schema(path)
        return {f.name: FieldSchema(f.name, _arrow_field_type(pa, f.type), nullable=f.nullable)
                for f in schema}

    def write(self, path: Path, records: Sequence[Record], indexes: list[int],
              operation: Operation, key: str, outcomes: list[Outcome | None]) -> None:
        pa, pq = _arrow()
        errors = (pa.ArrowException, TypeError, ValueError, OverflowError)
        exists = path.is_file()
        if exists:
            schema = pq.read_schema(path)
            if key not in schema.names:
                raise SpecError(f"{path} has no field '{key}'{suggest(key, schema.names)}")
        elif operation in (Operation.UPDATE, Operation.DELETE):
            _skip_all(records, indexes, key, outcomes)
            return
        else:
            schema = _inferred_schema(pa, [records[i] for i in indexes], errors)
            if schema is None:
                for index in indexes:
                    _reject(outcomes, index, records[index][key],
                            "no Parquet type fits its values", "INVALID_TYPE")
                return
        accepted: list[int] = []
        for index in indexes:
            record = records[index]
            problem = None if operation is Operation.DELETE else _parquet_problem(
                pa, schema, record, operation, path, errors)
            if problem is not None:
                _reject(outcomes, index, record[key], *problem)
            else:
                accepted.append(index)
        if not accepted:
            return
        batch = _Batch(records, accepted, operation, key, dict)
        with replacing(path) as temp, pq.ParquetWriter(temp, schema) as writer:
            if exists:
                with pq.ParquetFile(path) as source:
                    for part in source.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
                        if not batch.touches(part.column(key).to_pylist()):
                            writer.write_batch(part)
                            continue
                        applied = [batch.apply(row) for row in part.to_pylist()]
                        writer.write_table(pa.Table.from_pylist(
                            [row for row in applied if row is not None], schema=schema))
            created = batch.created()
            if created:
                writer.write_table(pa.Table.from_pylist(created, schema=schema))
        batch.report(outcomes)


def _inferred_schema(pa: Any, records: list[Record], errors: tuple[type[Exception], ...]) -> Any:
    """The schema of a new file, None when arrow finds none. Inferred over the batch, else over
    its first record arrow can type (the schema then rejects the others); its fields are the
    first record's, as in a CSV header."""
    for candidate in (records, *([r] for r in records)):
        try:
            return pa.Table.from_pylist(candidate).schema
        except errors:
            continue
    return None


def _parquet_problem(pa: Any, schema: Any, record: Record, operation: Operation, path: Path,
                     errors: tuple[type[Exception], ...]) -> tuple[str, str] | None:
    """Why `record` cannot go into a file of `schema` (reason, code), or None."""
    unknown = _unknown_field(record, schema.names, path)
    if unknown:
        return unknown, "UNKNOWN_FIELD"
    for field in schema:
        absent = field.name not in record and operation in (Operation.INSERT, Operation.UPSERT)
        if not field.nullable and (absent or (field.name in record
                                              and record[field.name] is None)):
            return f"field '{field.name}' is required in {path}", "REQUIRED_FIELD_MISSING"
    try:
        pa.Table.from_pylist([record], schema=schema)
    except errors as exc:
        return f"does not fit the types of {path}: {exc}", "INVALID_TYPE"
    return None


# -- values -------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A value as text, the way a CSV holds it; also how keys are matched across types."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    if isinstance(value, (dt.datetime, dt.date, dt.time, Decimal)):
        return str(_json_default(value))
    return str(value)


def _json_default(value: Any) -> Any:
    # A space between date and time, as scope filtering compares datetimes with file text.
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"a {type(value).__name__} has no JSON form")


def _shown(raw: str | bytes, encoding: str) -> str:
    """A broken row's text for people: line endings off, undecodable bytes as \\x escapes."""
    data = raw if isinstance(raw, bytes) else raw.encode(encoding, "surrogateescape")
    return data.decode(encoding, "backslashreplace").strip("\r\n")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "boolean" if isinstance(value, bool) else "number"


def _json_field_type(value: Any) -> FieldType:
    if isinstance(value, bool):
        return FieldType.BOOLEAN
    if isinstance(value, int):
        return FieldType.INTEGER
    if isinstance(value, float):
        return FieldType.NUMBER
    if isinstance(value, str):
        return FieldType.STRING
    return FieldType.JSON


def _one_type(seen: set[FieldType]) -> FieldType:
    if len(seen) == 1:
        return next(iter(seen))
    if seen == {FieldType.INTEGER, FieldType.NUMBER}:
        return FieldType.NUMBER
    return FieldType.STRING if not seen else FieldType.JSON


def _arrow_field_type(pa: Any, kind: Any) -> FieldType:
    checks = ((pa.types.is_boolean, FieldType.BOOLEAN), (pa.types.is_integer, FieldType.INTEGER),
              (pa.types.is_floating, FieldType.NUMBER), (pa.types.is_decimal, FieldType.DECIMAL),
              (pa.types.is_timestamp, FieldType.DATETIME), (pa.types.is_date, FieldType.DATE),
              (pa.types.is_nested, FieldType.JSON))
    return next((field_type for test, field_type in checks if test(kind)), FieldType.STRING)


# -- the file system ----------------------------------------------------------------------------


def _append(path: Path, data: bytes, newline: bytes) -> None:
    if not data:
        return
    with path.open("a+b") as handle:
        # A last line without its line ending would run into the first line appended.
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) not in (b"\n", b"\r"):
                data = newline + data
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _arrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SpecError("Parquet files need pyarrow: pip install 'patchbay[parquet]'") from None
    return pa, pq


# -- options ------------------------------------------------------------------------------------


def _folder(system: SystemSpec) -> Path:
    rest = system.url.split(":", 1)[1]
    # file:///abs/dir and file:/abs/dir name the same folder, as spec.py anchors them.
    if rest.startswith("//"):
        rest = rest[2:]
    if not rest:
        raise SpecError(f"system '{system.name}': {system.url} names no folder")
    return Path(rest)


def _format_option(system: str, value: Any) -> str | None:
    if value is None:
        return None
    name = _FORMAT_NAMES.get(str(value).lower())
    if name is None:
        raise SpecError(f"system '{system}': option format '{value}' is not one of "
                        f"{', '.join(_FORMAT_NAMES)}{suggest(str(value), _FORMAT_NAMES)}")
    return name


def _encoding(system: str, value: Any) -> str:
    try:
        return codecs.lookup(str(value)).name
    except LookupError:
        raise SpecError(f"system '{system}': option encoding '{value}' is not an encoding "
                        f"Python knows") from None


def _delimiter(system: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) != 1 or value in "\r\n\"":
        raise SpecError(f"system '{system}': option delimiter must be one character, "
                        f"not {value!r}")
    return value


def _declared_fields(system: str, value: Any) -> list[str] | dict[str, list[str]] | None:
    def names(item: Any) -> list[str]:
        if not isinstance(item, list) or not all(isinstance(n, str) for n in item):
            raise SpecError(f"system '{system}': option fields must list field names, or map "
                            f"file names to such lists, not {value!r}")
        return item

    if value is None:
        return None
    if isinstance(value, dict):
        return {str(name): names(item) for name, item in value.items()}
    return names(value)


def _null_values(system: str, value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SpecError(f"system '{system}': option null_values must be a list of texts, "
                        f"not {value!r}")
    return values
