"""The merge step of the aggregation pattern: the sources' tables become one data set, in DuckDB.

Each source arrives as an Arrow table already transformed into the common shape. The step
runs on one in-process DuckDB connection that scans those tables where they are (no copy
into Python objects) and returns an Arrow table:

1. the `union` sources, one row per real-world entity: rows of equal `key` are one entity;
   a null or empty key matches nothing, so its row stays an entity of its own. Inside one
   source, of the rows of one key only the latest by `precedence.recent_by` counts (or,
   without it, the last in the table's order); with `precedence.older_rows: non_empty`, a
   non_empty field empty in that row takes the latest non-empty value of the older ones;
2. each field of an entity takes its value by the field's precedence rule, with optional
   provenance (`<field>__source`) and flags (`_sources`, `_differs`);
3. each `enrich` source reduced to aggregates per entity and joined on;
4. `group_by` with `aggregate` reducing the entities to one row per group;
5. `sql`, a last SELECT over `merged` (the result so far) and the sources by name.

A source missing from `sources` failed; the answer is then partial, and the step goes on
without it: a union member is left out, and what the missing source would have decided is
left null and named in `Merged.incomplete`, never given as a number: every aggregate of an
enrich source that is missing (or whose join field is missing with a union source), and,
when a union source is missing, every `group_by` aggregate (the groups lack its entities)
as well as any aggregate over an incomplete column. (An entity that simply has no rows in
an enrich source that answered gets 0 for count and count_distinct.) Fields the present
sources do not have are not in the result; a field the spec names that is missing only
because a source is missing reads as null, while with every union source present it is a
SpecError. `merge.sql` is the integration's own: the columns it passes on by name keep
their mark, what it computes from them is its business.

Timestamps are merged in UTC: the connection's time zone is pinned, so naive timestamps
read as UTC wall-clock times whatever the machine's zone (a source whose naive timestamps
mean another zone declares it, see `localize`), and an aware timestamp is compared by its
instant.

Where the sources' Arrow types of one field differ, the field takes the type DuckDB gives
their UNION, as long as every source's type converts to it implicitly (conversions that
cannot fail on a value); otherwise it becomes VARCHAR. A field whose Arrow type is the same
in every source keeps exactly that Arrow type in the result.

Entities come out in the order they first appear (union order, then each table's order),
groups in the order of their group values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from patchbay.errors import ParameterError, SpecError
from patchbay.extras import driver_needed
from patchbay.spec import AggregateSpec, EnrichSpec, MergeSpec, suggest

if TYPE_CHECKING:
    import duckdb

_RESERVED = "__pb_"
_POS = "__pb_pos"  # a row's place in its table: DuckDB's parallel scans do not keep the order
_UNION_AT = "__pb_u"  # the source's place in `union`
_RANK = "__pb_p"  # the source's place in the precedence order
_RECENT_RANK = "__pb_r"
_GROUP_SOURCE = "__pb_gu"  # with _GROUP_POS: set only for a blank key, so that its row groups alone
_GROUP_POS = "__pb_gp"
_FIRST_AT = "__pb_fu"
_FIRST_POS = "__pb_fp"
_NAMES = "__pb_names"
_FIELDS = "__pb_fields"

_TEXT = "VARCHAR"
_NULL_TYPE = '"NULL"'  # str(duckdb.sqltypes.SQLNULL): the type of a null literal
# DuckDB sums these as HUGEINT, which Arrow can only hold as decimal128(38, 0).
_SMALL_INTEGERS = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"})
_VALUE_PICKERS = frozenset({"min", "max", "latest"})


@dataclass
class Merged:
    """The merged data set, and the columns a missing source left uncomputed."""

    table: pa.Table
    incomplete: dict[str, list[str]]
    """{column: the missing sources it needed}: its values are null, not a count of nothing."""


def merge(sources: Mapping[str, pa.Table], spec: MergeSpec,
          params: Mapping[str, Any] | None = None, *, limit: int | None = None) -> Merged:
    """The sources merged by `spec` into one Arrow table, with the columns left unknown.

    `sources` holds each source's transformed records by source name; a source that failed
    is simply absent (see the module's documentation for what then happens). `params` are
    the run's parameters, bound by name in `spec.sql` (`$name`). `limit`: at most this many
    rows come out, the database stopping there (a caller capping an answer asks for one
    more than its cap, to tell "exactly the cap" from "over it"). Raises SpecError when the
    spec does not fit the data (a field that is not there, an aggregate DuckDB refuses, a
    failing `sql`), and ParameterError when `spec.sql` uses a parameter not given.
    """
    rules = {spec.precedence.default, *spec.precedence.fields.values()}
    if "most_recent" in rules and spec.precedence.recent_by is None:
        raise SpecError("merge.precedence uses most_recent but has no recent_by: name the field that "
                        "says which source's row is the most recent")
    if not any(name in sources for name in spec.union):
        return Merged(pa.table({spec.key: pa.array([], pa.string())}), {})
    missing_union = [name for name in dict.fromkeys(spec.union) if name not in sources]
    # No file access: `merge.sql` may use run parameters, which must not reach a path
    # (read_csv($file) and the like); the sources are registered Arrow tables.
    with driver_needed("an aggregation's merge"):
        import duckdb
    with duckdb.connect(config={"enable_external_access": False}) as con:
        # DuckDB takes the machine's zone otherwise, and casts naive timestamps through it.
        con.execute("SET TimeZone = 'UTC'")
        db = _Database(con)
        last = "sql" if spec.sql is not None else "group" if spec.group_by is not None else "merge"
        merging = _Merge(db, sources, spec, not missing_union)
        result = merging.run(limit if last == "merge" else None)
        incomplete = merging.incomplete
        if spec.group_by is not None:
            result, incomplete = _group(db, result, spec.group_by, spec.aggregate, missing_union,
                                        incomplete, limit if last == "group" else None)
        if spec.sql is not None:
            named = dict.fromkeys([*spec.union, *(enrich.source for enrich in spec.enrich)])
            result = _final_select(con, sources, result, spec.sql, params or {},
                                   [name for name in named if name not in sources], limit)
            incomplete = {c: s for c, s in incomplete.items() if c in result.column_names}
    return Merged(result, incomplete)


def localize(table: pa.Table, zone: str) -> pa.Table:
    """`table` with its naive timestamp columns read as wall-clock times in `zone`, which
    makes them aware (and comparable with every other source's instants). A wall-clock time
    a daylight-saving change makes ambiguous or skips takes the earlier instant."""
    for index, column in enumerate(table.schema):
        if pa.types.is_timestamp(column.type) and column.type.tz is None:
            aware = pc.assume_timezone(table.column(index), zone, ambiguous="earliest",
                                       nonexistent="earliest")
            table = table.set_column(index, column.name, aware)
    return table


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _non_empty(expr: str, kind: str) -> str:
    if kind == _TEXT:
        return f"({expr} IS NOT NULL AND {expr} <> '')"
    return f"({expr} IS NOT NULL)"


class _Database:
    """One DuckDB connection: the Arrow tables registered on it, and queries run to Arrow."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._registered = 0

    def register(self, table: pa.Table) -> str:
        """Register `table`, with a `_POS` column of its row positions, under a new name."""
        name = f"{_RESERVED}t{self._registered}"
        self._registered += 1
        ones = pa.repeat(pa.scalar(1, pa.int64()), table.num_rows)
        self.con.register(name, table.append_column(_POS, pc.subtract(pc.cumulative_sum(ones), 1)))
        return name

    def kinds(self, view: str) -> dict[str, str]:
        """The DuckDB type of each column of a registered table, in its column order."""
        relation = self.con.sql(f"SELECT * EXCLUDE ({_POS}) FROM {_ident(view)}")
        return dict(zip(relation.columns, (str(kind) for kind in relation.types), strict=True))

    def unify(self, kinds: Iterable[str]) -> str:
        """The type that holds the values of all these types (see the module's documentation)."""
        distinct = list(dict.fromkeys(kind for kind in kinds if kind != _NULL_TYPE))
        if len(distinct) < 2:
            return distinct[0] if distinct else _NULL_TYPE
        import duckdb

        probe = " UNION ALL ".join(f"SELECT CAST(NULL AS {kind}) AS v" for kind in distinct)
        try:
            union = str(self.con.sql(probe).types[0])
            if union == _TEXT:
                return union
            # DuckDB's union may pick a type some values cannot be cast to (text to a list,
            # integer to timestamp) and then fail on the data; implicit casts never do.
            checks = " AND ".join(f"can_cast_implicitly(CAST(NULL AS {kind}), CAST(NULL AS {union}))"
                                  for kind in distinct)
            safe = bool(self.con.sql(f"SELECT {checks}").fetchall()[0][0])
        except duckdb.Error:
            return _TEXT
        return union if safe else _TEXT

    def fetch(self, sql: str, params: Mapping[str, Any], doing: str, limit: int | None = None) -> pa.Table:
        import duckdb

        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            return self.con.sql(sql, params=dict(params) or None).to_arrow_table()
        except duckdb.Error as error:
            raise SpecError(f"{doing} failed: {error}") from error


def _common_arrow_types(tables: Iterable[pa.Table]) -> dict[str, pa.DataType]:
    """Per column, the Arrow type every table holding it agrees on (null-typed columns aside)."""
    seen: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            if not pa.types.is_null(field.type):
                seen.setdefault(field.name, set()).add(field.type)
    return {name: next(iter(types)) for name, types in seen.items() if len(types) == 1}


def _restore_types(table: pa.Table, wanted: Mapping[str, pa.DataType]) -> pa.Table:
    """`table` with the Arrow types its columns had going in.

    DuckDB reads some Arrow types as a wider one (dictionaries and large strings as text,
    any time zone as the connection's); the values are the same, only the type is put back.
    """
    for index, name in enumerate(table.column_names):
        want = wanted.get(name)
        if want is None or table.schema.field(index).type == want:
            continue
        try:
            table = table.set_column(index, name, pc.cast(table.column(index), want))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue  # DuckDB changed the values' type itself (e.g. to VARCHAR): its type stands
    return table


def _check_unique(columns: Sequence[str], where: str) -> None:
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise SpecError(f"{where} would have two columns named '{twice[0]}'; rename one")


def _unknown(agg: AggregateSpec) -> str:
    """An aggregate that cannot be computed (its source or field is missing), as SQL: null,
    of the aggregate's type where that does not depend on the data."""
    function = agg.function[0]
    if function in ("count", "count_distinct"):
        return "CAST(NULL AS BIGINT)"
    if function == "avg":
        return "CAST(NULL AS DOUBLE)"
    return "NULL"


def _aggregate(agg: AggregateSpec, kinds: Mapping[str, str], where: str, strict: bool) -> str:
    """One aggregate as SQL over a registered table of these column types.

    A field that is not there is a SpecError when `strict`, else the aggregate is unknown.
    """
    function, field = agg.function
    if function == "count" and field == "*":
        return "count(*)"
    for name in (field, agg.by):
        if name is not None and name not in kinds:
            if strict:
                raise SpecError(f"{where} names field '{name}', which is not there{suggest(name, kinds)}")
            return _unknown(agg)
    column = _ident(field)
    if function == "count_distinct":
        return f"count(DISTINCT {column})"
    if function == "sum" and kinds[field] in _SMALL_INTEGERS:
        return f"CAST(sum({column}) AS BIGINT)"  # an overflow is an error, never a wrap-around
    if function == "latest" and agg.by is not None:
        by = _ident(agg.by)
        return f"arg_max_null({column}, row({by}, {_POS})) FILTER (WHERE {by} IS NOT NULL)"
    return f"{function}({column})"


def _value_types(aggregates: Mapping[str, AggregateSpec],
                 types: Mapping[str, pa.DataType]) -> dict[str, pa.DataType]:
    """The Arrow type of each aggregate column that is one of its field's values."""
    wanted = {}
    for name, agg in aggregates.items():
        function, field = agg.function
        if function in _VALUE_PICKERS and field in types:
            wanted[name] = types[field]
    return wanted


class _Merge:
    """The union into entities, precedence, provenance, flags and enrichment: one SQL statement."""

    def __init__(self, db: _Database, sources: Mapping[str, pa.Table], spec: MergeSpec,
                 complete: bool) -> None:
        self.db = db
        self.sources = sources
        self.spec = spec
        self.complete = complete
        self.names = [name for name in dict.fromkeys(spec.union) if name in sources]
        declared = [name for name in spec.precedence.order or [] if name in self.names]
        ranked = [*declared, *(name for name in self.names if name not in declared)]
        self.rank = {name: index for index, name in enumerate(ranked)}
        self.views = {name: db.register(sources[name]) for name in self.names}
        self.kinds = {name: db.kinds(self.views[name]) for name in self.names}
        for name in self.names:
            if spec.key not in self.kinds[name]:
                raise SpecError(f"merge.key: union source '{name}' has no field '{spec.key}'"
                                f"{suggest(spec.key, self.kinds[name])}")
        order: dict[str, None] = {spec.key: None}
        for name in self.names:
            order.update(dict.fromkeys(self.kinds[name]))
        reserved = [field for field in order if field.startswith(_RESERVED)]
        if reserved:
            raise SpecError(f"field '{reserved[0]}': names starting with {_RESERVED} are reserved")
        self.types = {field: db.unify(self.kinds[name][field] for name in self.names
                                      if field in self.kinds[name])
                      for field in order}
        self.fields = [field for field in order if field != spec.key]
        self.params: dict[str, Any] = {}
        self.missing = [name for name in dict.fromkeys(spec.union) if name not in sources]
        self.incomplete: dict[str, list[str]] = {}

    def rule(self, field: str) -> str:
        return self.spec.precedence.fields.get(field, self.spec.precedence.default)

    def recent_by(self) -> str | None:
        """The recent_by field, or None when no present source has it."""
        field = self.spec.precedence.recent_by
        if field is None or field in self.types:
            return field
        if self.complete:
            raise SpecError(f"merge.precedence.recent_by: no union source has field '{field}'"
                            f"{suggest(field, self.types)}")
        return None

    def cell(self, name: str, field: str) -> str:
        """The field of one source, cast to the field's merged type."""
        kind, merged = self.kinds[name][field], self.types[field]
        if kind == merged or merged == _NULL_TYPE:
            return _ident(field)
        return f"CAST({_ident(field)} AS {merged})"

    def rows(self, name: str) -> str:
        """One source's rows, down to one per key, tagged with their source and position."""
        at, rank = self.names.index(name), self.rank[name]
        key = self.cell(name, self.spec.key)
        blank = f"({key} IS NULL OR {key} = '')" if self.types[self.spec.key] == _TEXT else f"({key} IS NULL)"
        cells = [f"{self.cell(name, field)} AS {_ident(field)}" for field in self.kinds[name]]
        recent = self.recent_by()
        latest = (f"{self.cell(name, recent)} DESC NULLS LAST, "
                  if recent is not None and recent in self.kinds[name] else "")
        # A source whose keys are all there and all different has nothing to reduce: the
        # check costs a fraction of the window it saves.
        view = _ident(self.views[name])
        unique = self.db.con.sql(f"SELECT count(*) = count(DISTINCT {key}) FROM {view}").fetchall()[0][0]
        newest_first = f"PARTITION BY {key} ORDER BY {latest}{_POS} DESC"
        reduce = "" if unique else f"QUALIFY {blank} OR row_number() OVER ({newest_first}) = 1"
        if not unique and self.spec.precedence.older_rows == "non_empty":
            cells = [self.filled(name, field, blank, newest_first)
                     if field != self.spec.key and self.rule(field) == "non_empty" else cell
                     for field, cell in zip(self.kinds[name], cells, strict=True)]
        return (f"SELECT {', '.join(cells)}, {at} AS {_UNION_AT}, {rank} AS {_RANK}, {_POS}, "
                f"CASE WHEN {blank} THEN {at} END AS {_GROUP_SOURCE}, "
                f"CASE WHEN {blank} THEN {_POS} END AS {_GROUP_POS} "
                f"FROM {view} {reduce}")

    def filled(self, name: str, field: str, blank: str, newest_first: str) -> str:
        """A field of one source as `older_rows: non_empty` has it: the latest non-empty
        value of the key's rows in the source (a blank key's row keeps its own)."""
        value = self.cell(name, field)
        latest = (f"first_value(CASE WHEN {_non_empty(value, self.types[field])} THEN {value} END "
                  f"IGNORE NULLS) OVER ({newest_first} ROWS BETWEEN UNBOUNDED PRECEDING AND "
                  f"UNBOUNDED FOLLOWING)")
        return f"CASE WHEN {blank} THEN {value} ELSE {latest} END AS {_ident(field)}"

    def pick(self, value: str, field: str) -> str:
        """The aggregate choosing, per entity, `value` from the row the field's rule picks."""
        rule = self.rule(field)
        if rule == "order":
            return f"arg_min_null({value}, {_RANK})"
        if rule == "most_recent":
            return f"arg_min_null({value}, {_RECENT_RANK})"
        return f"arg_min({value}, {_RANK}) FILTER (WHERE {_non_empty(_ident(field), self.types[field])})"

    def source_name(self, at: str) -> str:
        self.params[_NAMES] = self.names
        return f"${_NAMES}[{at} + 1]"

    def entities(self) -> tuple[str, list[str]]:
        """The SELECT of one row per entity, and its output columns."""
        if len(self.names) == 1:
            return self.single_entities()
        key = _ident(self.spec.key)
        columns = [self.spec.key, *self.fields]
        cells = [key, *(f"{self.pick(_ident(field), field)} AS {_ident(field)}" for field in self.fields)]
        if self.spec.provenance:
            for field in self.fields:
                had_value = f"bool_or({_non_empty(_ident(field), self.types[field])})"
                source = self.source_name(self.pick(_UNION_AT, field))
                cells.append(f"CASE WHEN {had_value} THEN {source} END AS {_ident(field + '__source')}")
                columns.append(field + "__source")
        if self.spec.flags:
            # Sorting the few source numbers per entity is much cheaper than an ordered string_agg.
            at = f"{_RESERVED}x"
            sources = (f"array_to_string(list_transform(list_sort(list({_UNION_AT})), "
                       f"lambda {at}: {self.source_name(at)}), '|')")
            cells += [f"{sources} AS _sources", f"{self.differs()} AS _differs"]
            columns += ["_sources", "_differs"]
        cells += [f"min({_UNION_AT}) AS {_FIRST_AT}", f"arg_min({_POS}, {_UNION_AT}) AS {_FIRST_POS}"]
        return (f"SELECT {', '.join(cells)} FROM ranked "
                f"GROUP BY {key}, {_GROUP_SOURCE}, {_GROUP_POS}"), columns

    def single_entities(self) -> tuple[str, list[str]]:
        """The same with one union source: its rows are its entities already (one per key),
        each value from it, nothing to differ."""
        columns = [self.spec.key, *self.fields]
        cells = [_ident(column) for column in columns]
        if self.spec.provenance:
            source = self.source_name("0")
            for field in self.fields:
                cells.append(f"CASE WHEN {_non_empty(_ident(field), self.types[field])} THEN {source} "
                             f"END AS {_ident(field + '__source')}")
                columns.append(field + "__source")
        if self.spec.flags:
            cells += [f"{self.source_name('0')} AS _sources", "'' AS _differs"]
            columns += ["_sources", "_differs"]
        cells += [f"0 AS {_FIRST_AT}", f"{_POS} AS {_FIRST_POS}"]
        return f"SELECT {', '.join(cells)} FROM rows", columns

    def differs(self) -> str:
        compared = [(index, field) for index, field in enumerate(self.fields)
                    if self.types[field] != _NULL_TYPE]
        if not compared:
            return "''"
        self.params[_FIELDS] = self.fields
        parts = []
        for index, field in compared:
            values = f"FILTER (WHERE {_non_empty(_ident(field), self.types[field])})"
            column = _ident(field)
            parts.append(f"CASE WHEN min({column}) {values} <> max({column}) {values} "
                         f"THEN ${_FIELDS}[{index + 1}] END")
        return f"concat_ws('|', {', '.join(parts)})"

    def ranked(self) -> str:
        """The union's rows, numbered per entity from the most recent when a rule needs it."""
        if "most_recent" not in {self.rule(field) for field in self.fields}:
            return "SELECT * FROM rows"
        recent = self.recent_by()
        latest = f"{_ident(recent)} DESC NULLS LAST, " if recent is not None else ""
        return (f"SELECT *, row_number() OVER (PARTITION BY {_ident(self.spec.key)}, {_GROUP_SOURCE}, "
                f"{_GROUP_POS} ORDER BY {latest}{_RANK}) AS {_RECENT_RANK} FROM rows")

    def enrich(self, index: int, enrich: EnrichSpec) -> tuple[str | None, list[str]]:
        """The CTE reducing one enrich source per entity (None when it cannot match), and the
        select items of its columns."""
        where = f"merge.enrich[{index}]"
        alias = f"{_RESERVED}e{index}"
        table = self.sources.get(enrich.source)
        missing = [field for field in enrich.join.values() if field not in self.types]
        if missing and self.complete:
            raise SpecError(f"{where}.join names entity field '{missing[0]}', which is not there"
                            f"{suggest(missing[0], self.types)}")
        if table is None or missing:
            needed = [*([enrich.source] if table is None else []), *(self.missing if missing else [])]
            self.incomplete.update({name: needed for name in enrich.aggregate})
            return None, [f"{_unknown(agg)} AS {_ident(name)}" for name, agg in enrich.aggregate.items()]
        view = self.db.register(table)
        kinds = self.db.kinds(view)
        for field in enrich.join:
            if field not in kinds:
                raise SpecError(f"{where}.join: source '{enrich.source}' has no field '{field}'"
                                f"{suggest(field, kinds)}")
        groups = [f"{_ident(field)} AS {_RESERVED}on{n}" for n, field in enumerate(enrich.join)]
        aggregates = [f"{_aggregate(agg, kinds, f'{where}.aggregate.{name}', True)} AS {_ident(name)}"
                      for name, agg in enrich.aggregate.items()]
        cte = (f"{alias} AS (SELECT {', '.join([*groups, *aggregates])} FROM {_ident(view)} "
               f"GROUP BY {', '.join(_ident(field) for field in enrich.join)})")
        items = [f"coalesce({alias}.{_ident(name)}, 0) AS {_ident(name)}"
                 if agg.function[0] in ("count", "count_distinct")
                 else f"{alias}.{_ident(name)} AS {_ident(name)}"
                 for name, agg in enrich.aggregate.items()]
        return cte, items

    def join(self, index: int, enrich: EnrichSpec) -> str:
        alias = f"{_RESERVED}e{index}"
        equal = " AND ".join(f"m.{_ident(entity)} = {alias}.{_RESERVED}on{n}"
                             for n, entity in enumerate(enrich.join.values()))
        return f"LEFT JOIN {alias} ON {equal}"

    def run(self, limit: int | None) -> pa.Table:
        entities, columns = self.entities()
        ctes = [f"{_RESERVED}s{at} AS ({self.rows(name)})" for at, name in enumerate(self.names)]
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM {_RESERVED}s{at}" for at in range(len(self.names)))
        ctes += [f"rows AS ({union})", f"ranked AS ({self.ranked()})", f"entities AS ({entities})"]
        items = [f"m.{_ident(column)}" for column in columns]
        joins = []
        wanted = _common_arrow_types(self.sources[name] for name in self.names)
        for index, enrich in enumerate(self.spec.enrich):
            cte, enriched = self.enrich(index, enrich)
            items += enriched
            columns += list(enrich.aggregate)
            if cte is not None:
                ctes.append(cte)
                joins.append(self.join(index, enrich))
                source_types = {f.name: f.type for f in self.sources[enrich.source].schema}
                wanted.update(_value_types(enrich.aggregate, source_types))
        _check_unique(columns, "the merged data set")
        sql = (f"WITH {', '.join(ctes)} SELECT {', '.join(items)} FROM entities AS m {' '.join(joins)} "
               f"ORDER BY m.{_FIRST_AT}, m.{_FIRST_POS}")
        return _restore_types(self.db.fetch(sql, self.params, "merge", limit), wanted)


def _group(db: _Database, merged: pa.Table, group_by: Sequence[str],
           aggregates: Mapping[str, AggregateSpec], missing_union: Sequence[str],
           incomplete: Mapping[str, list[str]], limit: int | None) -> tuple[pa.Table, dict[str, list[str]]]:
    """The merged rows reduced to one per group of `group_by`, with the aggregates, and the
    aggregates left unknown: all of them when a union source is missing (its entities are
    not in the groups), else those over an incomplete column."""
    view = db.register(merged)
    kinds = db.kinds(view)
    complete = not missing_union
    groups = []
    for field in group_by:
        if field in kinds:
            groups.append(_ident(field))
        elif complete:
            raise SpecError(f"merge.group_by names field '{field}', which is not there"
                            f"{suggest(field, kinds)}")
        else:
            groups.append(f"NULL AS {_ident(field)}")
    unknown: dict[str, list[str]] = {}
    items = [*groups]
    for name, agg in aggregates.items():
        computed = _aggregate(agg, kinds, f"merge.aggregate.{name}", complete)
        needed = [*missing_union, *(source for column in (agg.function[1], agg.by)
                                    for source in incomplete.get(column or "", []))]
        if needed:
            unknown[name] = list(dict.fromkeys(needed))
            # Computed all the same, so that DuckDB still checks it and gives it its type.
            computed = f"CASE WHEN true THEN NULL ELSE {computed} END"
        items.append(f"{computed} AS {_ident(name)}")
    if not items:
        raise SpecError("merge.group_by is empty and merge.aggregate names no aggregate: "
                        "the result would have no column")
    _check_unique([*group_by, *aggregates], "the grouped data set")
    order = f" ORDER BY {', '.join(str(n + 1) for n in range(len(groups)))}" if groups else ""
    result = db.fetch(f"SELECT {', '.join(items)} FROM {_ident(view)} GROUP BY ALL{order}", {},
                      "merge.aggregate", limit)
    types = {field.name: field.type for field in merged.schema}
    wanted = {field: types[field] for field in group_by if field in types}
    wanted.update(_value_types(aggregates, types))
    kept = {column: sources for column, sources in incomplete.items() if column in group_by}
    return _restore_types(result, wanted), {**kept, **unknown}


def _final_select(con: duckdb.DuckDBPyConnection, sources: Mapping[str, pa.Table], merged: pa.Table,
                  sql: str, params: Mapping[str, Any], missing_sources: Sequence[str],
                  limit: int | None) -> pa.Table:
    """`sql` run over `merged` and the sources by name, with the parameters it uses."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as error:
        raise SpecError(f"merge.sql cannot be read: {error}") from error
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise SpecError("merge.sql must be one SELECT statement")
    used = statements[0].named_parameters
    missing = sorted(used - set(params))
    if missing:
        raise ParameterError(f"merge.sql uses parameter ${missing[0]}, which the run was not given")
    if "merged" in sources:
        raise SpecError("a source named 'merged' hides the merged data set from merge.sql; rename it")
    for name, table in sources.items():
        con.register(name, table)
    con.register("merged", merged)
    try:
        relation = con.sql(sql, params={name: params[name] for name in used} or None)
        return (relation if limit is None else relation.limit(limit)).to_arrow_table()
    except duckdb.Error as error:
        absent = f" (sources missing from this run: {', '.join(missing_sources)})" if missing_sources else ""
        raise SpecError(f"merge.sql failed: {error}{absent}") from error
