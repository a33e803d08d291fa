"""Loading integration files: YAML with line numbers (and duplicate keys, depth and size
refused), `${ENV}` in systems, and every problem reported at once with file, line, field and
a did-you-mean suggestion."""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from patchbay import logs
from patchbay.errors import SpecError
from patchbay.spec import registry
from patchbay.spec.common import (
    COMPARISONS,
    IntegrationSpec,
    NotifySpec,
    ParamRef,
    Scope,
    SpecModel,
    SystemSpec,
    scrub,
    suggest,
)
from patchbay.spec.match import MatchSpec


class FileModel(SpecModel):
    """An integration file."""

    version: Literal[1] = 1
    systems: dict[str, SystemSpec] = Field(description="System name -> URL, or URL and options.")
    integrations: list[IntegrationSpec] = Field(
        min_length=1, description="Each with a `pattern` saying which of these it is.")
    notify: list[NotifySpec] = Field(
        default_factory=list, description="Notifications of every integration of the file.")

    @model_validator(mode="after")
    def _name_systems(self) -> FileModel:
        for name, system in self.systems.items():
            object.__setattr__(system, "name", name)
        return self


def document_model() -> type[FileModel]:
    """The model of an integration file: each integration is read by the spec model of the
    pattern it names, among those registered now."""
    return _document_of(registry.spec_models())


@functools.cache
def _document_of(models: tuple[type[IntegrationSpec], ...]) -> type[FileModel]:
    one: Any = Annotated[Union[models], Field(discriminator="pattern")]  # noqa: UP007 (a tuple of members)
    integrations: Any = (list[one], Field(
        min_length=1, description="Each with a `pattern` saying which of these it is."))
    return create_model("Document", __base__=FileModel, __doc__=FileModel.__doc__,
                        integrations=integrations)


Document = document_model()
"""The model of an integration file with the patterns patchbay ships (its JSON Schema and
reference); `document_model()` includes patterns registered since."""


# -- the loaded file ----------------------------------------------------------------------------


class IntegrationFile:
    """A validated integration file, with where it came from."""

    def __init__(self, document: FileModel, path: Path | None = None) -> None:
        self.document = document
        self.path = path

    @property
    def systems(self) -> dict[str, SystemSpec]:
        return self.document.systems

    @property
    def integrations(self) -> list[IntegrationSpec]:
        return self.document.integrations

    @property
    def secrets(self) -> list[str]:
        """Every secret the file's systems resolved (see SystemSpec.secrets), and its
        notifications' (NotifySpec.secrets)."""
        return ([secret for system in self.systems.values() for secret in system.secrets]
                + [secret for notify in self.document.notify for secret in notify.secrets]
                + [secret for integration in self.integrations for notify in integration.notify
                   for secret in notify.secrets])

    def notifications(self, integration: IntegrationSpec) -> list[NotifySpec]:
        """The notifications of `integration`: the file's, then its own."""
        return [*self.document.notify, *integration.notify]

    def scrub(self, text: str) -> str:
        """`text` with every URL redacted and every secret of the file replaced by ***."""
        return scrub(text, self.secrets)

    def integration(self, name: str | None) -> IntegrationSpec:
        """The integration called `name`, or the only one when `name` is None."""
        by_name = {i.name: i for i in self.integrations}
        if name is None:
            if len(by_name) == 1:
                return self.integrations[0]
            raise SpecError(
                f"{self._where()} declares {len(by_name)} integrations; choose one with "
                f"--integration: {', '.join(by_name)}"
            )
        if name in by_name:
            return by_name[name]
        raise SpecError(f"{self._where()} has no integration '{name}'{suggest(name, by_name)}")

    def _where(self) -> str:
        return str(self.path) if self.path else "the integration file"


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> IntegrationFile:
    """Read and validate an integration file. Raises SpecError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read integration file {path}: {exc.strerror or exc}") from exc
    return loads(text, path=path, environ=environ)


def loads(text: str, path: Path | None = None, environ: Mapping[str, str] | None = None) -> IntegrationFile:
    """Validate an integration file's text; `path` names it in errors and anchors relative paths."""
    where = str(path) if path else "<integration>"
    data, lines = parse_yaml(text, where)
    if not isinstance(data, dict):
        raise SpecError(f"{where}:{lines[()]}: expected a mapping with 'systems' and 'integrations' "
                        "at the top")
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    systems = data.get("systems")
    if isinstance(systems, dict):
        base = path.parent if path else Path.cwd()
        data["systems"] = {
            name: _resolve_system(name, value, environ, base, where, lines, problems)
            for name, value in systems.items()
        }
    _resolve_notifications(data, environ, where, lines, problems)
    if problems:
        raise SpecError(f"{where}: invalid integration file", problems)
    try:
        document = document_model().model_validate(data)
    except ValidationError as exc:
        problems = _describe(exc, where, lines) + _read_as_suggested(exc, data, where, lines)
        raise SpecError(f"{where}: invalid integration file", problems) from None
    _check_references(document, where, lines)
    _check_system_options(document, where, lines)
    loaded = IntegrationFile(document, path)
    logs.hide(loaded.secrets)
    return loaded


def load_match(path: str | Path) -> MatchSpec:
    """Read and validate a match definition file: a YAML mapping that is the definition
    itself (what an integration's `match:` holds). Raises SpecError listing every problem
    with file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read match definition {path}: {exc.strerror or exc}") from exc
    where = str(path)
    data, lines = parse_yaml(text, where)
    if not isinstance(data, dict):
        raise SpecError(f"{where}:{lines[()]}: expected a match definition (a mapping with "
                        "'fields' and 'blocking') at the top")
    try:
        return MatchSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{where}: invalid match definition",
                        _describe(exc, where, lines, root=MatchSpec)) from None


OptionsModelOf = Callable[[str], "type[BaseModel] | None"]
_options_model_of: OptionsModelOf = lambda scheme: None  # noqa: E731
_options_models: Callable[[], Mapping[str, type[BaseModel]]] = dict


def use_connector_options(model_of: OptionsModelOf,
                          models: Callable[[], Mapping[str, type[BaseModel]]]) -> None:
    """The connector registry (a layer above, which this module does not import) says which
    options model a URL scheme's systems take (`model_of`) and lists them all (`models`):
    loading validates each system's options with it, `json_schema` describes them."""
    global _options_model_of, _options_models
    _options_model_of, _options_models = model_of, models


def _check_system_options(document: FileModel, where: str, lines: dict[tuple[Any, ...], int]) -> None:
    problems: list[str] = []
    for name, system in document.systems.items():
        model = _options_model_of(system.scheme) if system.options else None
        if model is None:
            continue
        try:
            model.model_validate(system.options)
        except ValidationError as exc:
            problems += _describe(exc, where, lines, ("systems", name, "options"), model)
    if problems:
        raise SpecError(f"{where}: invalid integration file", problems)


def _check_references(document: FileModel, where: str, lines: dict[tuple[Any, ...], int]) -> None:
    problems: list[str] = []
    names = [i.name for i in document.integrations]
    for index, integration in enumerate(document.integrations):
        if names.count(integration.name) > 1 and names.index(integration.name) != index:
            problems.append(_at(where, lines, ("integrations", index, "name"))
                            + f"integration name '{integration.name}' is used twice")
        for system, loc in integration.systems_used():
            if system not in document.systems:
                problems.append(
                    _at(where, lines, ("integrations", index, *loc))
                    + f"unknown system '{system}'{suggest(system, document.systems)}"
                )
        for pname, loc in _param_refs(integration):
            if pname not in integration.parameters:
                problems.append(
                    _at(where, lines, ("integrations", index, *loc))
                    + f"parameter '{pname}' is not declared under 'parameters'"
                    + suggest(pname, integration.parameters)
                )
    if problems:
        raise SpecError(f"{where}: invalid integration file", problems)


def _param_refs(integration: IntegrationSpec) -> list[tuple[str, tuple[Any, ...]]]:
    found: list[tuple[str, tuple[Any, ...]]] = []

    def walk_scope(scope: Scope | None, loc: tuple[Any, ...]) -> None:
        if scope is None:
            return
        for op in (*COMPARISONS, "in_", "not_in"):
            value = getattr(scope, op)
            alias = op.rstrip("_")
            if isinstance(value, ParamRef):
                found.append((value.param, (*loc, alias)))
            elif isinstance(value, list):
                found.extend((v.param, (*loc, alias, i)) for i, v in enumerate(value)
                             if isinstance(v, ParamRef))
        for group in ("and_", "or_"):
            for i, child in enumerate(getattr(scope, group) or []):
                walk_scope(child, (*loc, group.rstrip("_"), i))
        walk_scope(scope.not_, (*loc, "not"))

    for scope, loc in integration.scopes():
        walk_scope(scope, loc)
    for transform, loc in integration.transforms():
        for target, mapping in transform.fields.items():
            if isinstance(mapping.value, ParamRef):
                found.append((mapping.value.param, (*loc, "fields", target, "value")))
            if mapping.expr:
                found.extend((name, (*loc, "fields", target, "expr"))
                             for name in re.findall(r"\bparams\.([A-Za-z_]\w*)", mapping.expr))
    return found


# -- environment variables in systems -----------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _resolve_system(name: str, value: Any, environ: Mapping[str, str], base: Path, where: str,
                    lines: dict[tuple[Any, ...], int], problems: list[str]) -> Any:
    def substitute(text: str, loc: tuple[Any, ...]) -> str:
        return _substituted(text, loc, environ, where, lines, problems)

    def url(text: str, loc: tuple[Any, ...]) -> str:
        resolved = substitute(text, loc)
        if "\x00" in resolved:
            # no driver or path takes one, and pathlib raises a bare ValueError on it
            problems.append(_at(where, lines, loc) + "the URL holds a NUL character")
            return resolved
        return _anchor_relative(resolved, base)

    if isinstance(value, str):
        return url(value, ("systems", name))
    if isinstance(value, dict):
        resolved = dict(value)
        if isinstance(value.get("url"), str):
            resolved["url"] = url(value["url"], ("systems", name, "url"))
        if isinstance(value.get("options"), dict):
            resolved["options"] = _substitute_all(value["options"], ("systems", name, "options"),
                                                  substitute)
        return resolved
    return value


def _resolve_notifications(data: dict[str, Any], environ: Mapping[str, str], where: str,
                           lines: dict[tuple[Any, ...], int], problems: list[str]) -> None:
    """`${ENV}` filled in the webhook URLs and SMTP URLs of the file's and each
    integration's `notify`."""
    def substitute(text: str, loc: tuple[Any, ...]) -> str:
        return _substituted(text, loc, environ, where, lines, problems)

    places: list[tuple[Any, tuple[Any, ...]]] = [(data.get("notify"), ("notify",))]
    integrations = data.get("integrations")
    if isinstance(integrations, list):
        places += [(i.get("notify"), ("integrations", n, "notify"))
                   for n, i in enumerate(integrations) if isinstance(i, dict)]
    for notify, loc in places:
        for index, item in enumerate(notify if isinstance(notify, list) else []):
            for channel, field in (("webhook", "url"), ("email", "smtp")):
                block = item.get(channel) if isinstance(item, dict) else None
                if isinstance(block, dict) and isinstance(block.get(field), str):
                    block[field] = substitute(block[field], (*loc, index, channel, field))


def _substituted(text: str, loc: tuple[Any, ...], environ: Mapping[str, str], where: str,
                 lines: dict[tuple[Any, ...], int], problems: list[str]) -> str:
    """`${VAR}` and `${VAR:-default}` in `text` filled in from `environ`; a variable that
    is not set is a problem of the file."""
    def one(match: re.Match[str]) -> str:
        var, fallback = match.group(1), match.group(2)
        if var in environ:
            return environ[var]
        if fallback is not None:
            return fallback
        problems.append(_at(where, lines, loc) + f"environment variable {var} is not set")
        return ""
    return _ENV.sub(one, text)


def _substitute_all(value: Any, loc: tuple[Any, ...],
                    substitute: Callable[[str, tuple[Any, ...]], str]) -> Any:
    """`${ENV}` filled in every string of an option, however deep (headers, nested maps)."""
    if isinstance(value, str):
        return substitute(value, loc)
    if isinstance(value, dict):
        return {k: _substitute_all(v, (*loc, k), substitute) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_all(v, (*loc, i), substitute) for i, v in enumerate(value)]
    return value


def _anchor_relative(url: str, base: Path) -> str:
    """Relative file paths in sqlite:/// and file: URLs are relative to the integration file."""
    for prefix in ("sqlite:///", "file:"):
        if url.startswith(prefix):
            rest = url[len(prefix):]
            if prefix == "file:" and rest.startswith("//"):
                rest = rest[2:]
            if rest and not rest.startswith(("/", ":memory:")) and not rest.startswith("?"):
                return prefix + str((base / rest).resolve())
    return url


# -- YAML with line numbers ---------------------------------------------------------------------

MAX_DEPTH = 64
"""Mappings and lists nested deeper than this are refused (the composer recurses per level)."""
MAX_VALUES = 200_000
"""Values a document may hold once its aliases are expanded (a few anchors can otherwise
expand to billions)."""


class _Loader(yaml.SafeLoader):
    """The safe loader, with every value that cannot be built reported at its line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            # `!!int abc`, `!!int ''`, `!!timestamp 2024-13-01`: a tag's constructor fails with
            # whatever its conversion raises, and without the line
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value!r} as {node.tag.rsplit(':', 1)[-1]} "
                            f"({type(exc).__name__}: {exc})", node.start_mark) from None


def parse_yaml(text: str, where: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The document, and the line of every path in it. Raises SpecError naming `where` and
    the line for anything that is not well-formed YAML, and for every key given twice."""
    try:
        _check_depth(text, where)
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            raise SpecError(f"{where}:1: the file is empty")
        problems = _duplicate_keys(node, where)
        if problems:
            raise SpecError(f"{where}: invalid integration file", problems)
        data = _Loader(text).construct_document(node)
    except yaml.YAMLError as exc:
        raise _malformed(where, getattr(exc, "problem_mark", None),
                         getattr(exc, "problem", None) or str(exc)) from None
    lines: dict[tuple[Any, ...], int] = {}
    _index_lines(node, (), lines, set())
    return data, lines


def _malformed(where: str, mark: Any, problem: str) -> SpecError:
    """`mark` is where the YAML reader stopped (of its C or its Python implementation)."""
    at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{where}:1"
    return SpecError(f"{at}: malformed YAML: {problem}")


def _check_depth(text: str, where: str) -> None:
    """Refuse deep nesting from the parser's events, which need no recursion to read."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _malformed(where, event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _duplicate_keys(root: yaml.Node, where: str) -> list[str]:
    """Every key given twice in one mapping (YAML loaders keep the last one silently), and
    every alias that refers to itself or expands the document beyond MAX_VALUES."""
    problems: list[str] = []
    sizes: dict[int, int] = {}
    keys = _Loader("")

    def walk(node: yaml.Node, path: tuple[Any, ...], open_: set[int]) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_:
            raise yaml.MarkedYAMLError(problem="an alias refers to the value that contains it",
                                       problem_mark=node.start_mark)
        open_.add(id(node))
        size = 1
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    # keys as the loader builds them: `yes` and `true`, `1` and `0x1` are one key
                    key = keys.construct_object(key_node)
                    # an unhashable key (`!!set` on one) is the loader's to refuse, at its line
                    seen = first.setdefault(key, key_node) if _hashable(key) else key_node
                    if seen is not key_node:
                        problems.append(f"{where}:{key_node.start_mark.line + 1}: "
                                        f"{_dotted((*path, key_node.value))}: given "
                                        f"{_twice(seen.start_mark, key_node.start_mark)}; "
                                        "YAML would keep only the second")
                size += walk(key_node, path, open_)
                size += walk(value_node, (*path, _key_of(key_node)), open_)
        elif isinstance(node, yaml.SequenceNode):
            size += sum(walk(item, (*path, index), open_) for index, item in enumerate(node.value))
        open_.discard(id(node))
        sizes[id(node)] = size
        if size > MAX_VALUES:
            raise yaml.MarkedYAMLError(problem=f"holds more than {MAX_VALUES} values once its "
                                               "aliases are expanded", problem_mark=node.start_mark)
        return size

    walk(root, (), set())
    return problems


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _twice(first: Any, second: Any) -> str:
    """Where a key is given twice: its lines, or its columns when both are on one line."""
    if first.line == second.line:
        return f"twice on line {first.line + 1} (columns {first.column + 1} and {second.column + 1})"
    return f"twice, on lines {first.line + 1} and {second.line + 1}"


def _key_of(node: yaml.Node) -> Any:
    """A mapping key as a path part: its text, or its line for a key that is a list or mapping."""
    return node.value if isinstance(node, yaml.ScalarNode) else f"<key on line {node.start_mark.line + 1}>"


def _index_lines(node: yaml.Node, loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int],
                 seen: set[int]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if id(node) in seen:
        # an alias: its contents are indexed where the anchor is (problems inside it fall
        # back to the alias's own line)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*loc, _key_of(key_node))
            lines[key] = key_node.start_mark.line + 1
            _index_lines(value_node, key, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*loc, index), lines, seen)


def _at(where: str, lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> str:
    probe = tuple(loc)
    while probe and probe not in lines:
        probe = probe[:-1]
    line = lines.get(probe)
    dotted = _dotted(loc)
    return f"{where}:{line}: {dotted}: " if line else f"{where}: {dotted}: "


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def _describe(exc: ValidationError, where: str, lines: dict[tuple[Any, ...], int],
              prefix: tuple[Any, ...] = (), root: type[BaseModel] | None = None) -> list[str]:
    problems = []
    for error in exc.errors():
        # `tagged` keeps the pattern name pydantic puts after an integration's index, which
        # says which model applies; `loc` drops it, as it is not in the file.
        tagged = (*prefix, *(p for p in error["loc"]
                             if not (isinstance(p, str) and p.startswith("function-"))))
        patterns = registry.pattern_names()
        loc = tuple(p for i, p in enumerate(tagged)
                    if not (i == 2 and tagged[0] == "integrations" and p in patterns))
        kind = error["type"]
        if kind == "extra_forbidden":
            allowed = _fields_at(root, tagged[len(prefix):-1]) if root else \
                _fields_at(document_model(), tagged[:-1])
            message = f"unknown field '{loc[-1]}'{suggest(str(loc[-1]), allowed)}"
        elif kind == "missing":
            message = "this field is required"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "pattern")
            tag = error.get("ctx", {}).get("tag")
            known = ", ".join(patterns)
            if tag is not None:
                message = f"'{tag}' is not a pattern; one of {known}{suggest(str(tag), patterns)}"
            else:
                message = f"say which pattern: one of {known}"
        elif kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            options = re.findall(r"'([^']*)'", expected)
            message = f"'{error['input']}' is not one of {expected}{suggest(str(error['input']), options)}"
        elif kind == "enum":
            options = re.findall(r"'([^']*)'", error.get("ctx", {}).get("expected", ""))
            message = f"'{error['input']}' is not one of {', '.join(options)}" + suggest(
                str(error["input"]), options)
        else:
            message = error["msg"].removeprefix("Value error, ")
        problems.append(_at(where, lines, loc) + message)
    return problems


def _read_as_suggested(exc: ValidationError, data: dict[str, Any], where: str,
                       lines: dict[tuple[Any, ...], int]) -> list[str]:
    """The other problems of an integration whose pattern is misspelt, read as the pattern
    it most likely means, so that every problem of the file is still reported at once."""
    problems: list[str] = []
    for error in exc.errors():
        if error["type"] != "union_tag_invalid" or len(error["loc"]) != 2:
            continue
        index = error["loc"][1]
        close = difflib.get_close_matches(str(error.get("ctx", {}).get("tag")),
                                          registry.pattern_names(), n=1)
        entry = registry.registered(close[0]) if close else None
        model = entry.spec if entry is not None else None
        item = data["integrations"][index]
        if model is None or not isinstance(item, dict):
            continue
        try:
            model.model_validate({**item, "pattern": close[0]})
        except ValidationError as inner:
            problems += _describe(inner, where, lines, ("integrations", index), model)
    return problems


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names (aliases) valid at `loc` inside `model`, for did-you-mean suggestions."""
    current: Any = model
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        member = _tagged_member(current, part)
        if member is not None:
            current = member
            continue
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
            if field is None:
                return []
            current = field.annotation
        else:
            origin = get_origin(current)
            args = get_args(current)
            if origin in (list, tuple) and args:
                current = args[0]
            elif origin is dict and args:
                current = args[1]
            else:
                return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items() if n != "name" or f.alias]
    return []


def _tagged_member(annotation: Any, tag: Any) -> Any:
    """The member of a discriminated union whose `pattern` is `tag`, if `annotation` is one."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    members = get_args(annotation) if get_origin(annotation) in (Union, type(int | None)) else ()
    for member in members:
        if (isinstance(member, type) and issubclass(member, BaseModel)
                and "pattern" in member.model_fields
                and get_args(member.model_fields["pattern"].annotation) == (tag,)):
            return member
    return None


def _unwrap(annotation: Any) -> Any:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, type(int | None)):
        members = [a for a in get_args(annotation) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)
                  and m is not ParamRef]
        structured = [m for m in members if get_origin(m) in (list, dict)]
        return models[0] if models else (structured[0] if structured else annotation)
    return annotation



def json_schema() -> dict[str, Any]:
    """JSON Schema of integration files, for editors; `connectorOptions` holds the options
    each connector takes, by URL scheme (a system's `options`)."""
    schema = document_model().model_json_schema(by_alias=True)
    schema["connectorOptions"] = {scheme: model.model_json_schema(by_alias=True)
                                  for scheme, model in _options_models().items()}
    return schema
