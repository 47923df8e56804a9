"""One document through pydantic, with every error turned into `path:line: field.path: message`.

Pydantic reports a location such as `('ScalingPolicy', 'spec', 'signals', 0, 'promql', 'query')`:
the first and fifth elements are discriminator tags, not fields. `_field_path` walks the location
against the document's own data, drops the tags, and keeps the rest (camelCase aliases and list
indices) as the field path whose line the YAML composer recorded. Messages are rewritten to
`what is wrong (got X; expected Y)`, with "expected" taken from the model itself (the known fields
for a typo, the type of a missing field).

Validation is strict: YAML already types its scalars, so `maxReplicas: "5"` or `dryRun: "yes"` is a
mistake worth reporting rather than coercing.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from controller.policy.errors import PolicyError, describe_value
from controller.policy.model import (
    KINDS,
    AccessPolicy,
    ClusterProfile,
    Document,
    PendingDemandSignal,
    PolicyValueError,
    PromQLSignal,
    ScalingPolicy,
    UtilizationSignal,
)
from controller.policy.source import FieldPath, ParsedDocument, render_path

DocumentModel = ScalingPolicy | ClusterProfile | AccessPolicy

_DOCUMENT: TypeAdapter[DocumentModel] = TypeAdapter(Document)
_SIGNAL_TYPES = tuple(
    get_args(m.model_fields["type"].annotation)[0]
    for m in (PendingDemandSignal, UtilizationSignal, PromQLSignal)
)
# The discriminator key of each tagged union, and its tags: a location element equal to the tag in
# the data at that point is the union's branch name, not a field.
_TAGS: Mapping[str, tuple[str, ...]] = {"kind": KINDS, "type": _SIGNAL_TYPES}
_MISSING = object()

_TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_BOUNDS = {
    "greater_than": ("too small", ">", "gt"),
    "greater_than_equal": ("too small", ">=", "ge"),
    "less_than": ("too large", "<", "lt"),
    "less_than_equal": ("too large", "<=", "le"),
}


def validate_document(doc: ParsedDocument) -> tuple[DocumentModel | None, list[PolicyError]]:
    if not isinstance(doc.value, dict):
        return None, [
            PolicyError(
                doc.path,
                doc.line,
                "document",
                f"a policy document must be a mapping (got {describe_value(doc.value)}; "
                "expected apiVersion, kind, metadata and spec)",
            )
        ]
    try:
        return _DOCUMENT.validate_python(doc.value, strict=True), []
    except ValidationError as e:
        return None, [_to_policy_error(doc, err) for err in e.errors()]
    except RecursionError:
        return None, [
            PolicyError(doc.path, doc.line, "document", "nesting too deep (expected a policy document)")
        ]


def _is_tag(data: object, elem: object) -> bool:
    return isinstance(data, dict) and any(data.get(k) == elem and elem in tags for k, tags in _TAGS.items())


def _field_path(loc: tuple[int | str, ...], data: object) -> FieldPath:
    out: list[str | int] = []
    cur: object = data
    for elem in loc:
        if _is_tag(cur, elem) or elem == "[key]":
            continue
        out.append(elem)
        cur = _step(cur, elem)
    return tuple(out)


def _step(cur: object, elem: str | int) -> object:
    """The child `elem` of a YAML value, or _MISSING."""
    if isinstance(cur, dict):
        return cur.get(elem, _MISSING)
    if isinstance(cur, list) and isinstance(elem, int) and 0 <= elem < len(cur):
        return cur[elem]
    return _MISSING


def _annotation_at(fpath: FieldPath, data: object) -> Any:
    """The declared type of the node at `fpath`, choosing union branches by the data's tags; None
    when the path leaves the model (an unknown field)."""
    tp: Any = Document
    cur: object = data
    for elem in fpath:
        tp = _branch(tp, cur)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
            if not isinstance(elem, str) or elem not in fields:
                return None
            tp = fields[elem].annotation
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
        cur = _step(cur, elem)
    return _branch(tp, cur)


def _branch(tp: Any, data: object) -> Any:
    """Unwrap Annotated and unions: `X | None` is X; a tagged union is the branch the data names."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _branch(members[0], data)
        if isinstance(data, dict):
            for m in members:
                if isinstance(m, type) and issubclass(m, BaseModel):
                    for key in _TAGS:
                        f = m.model_fields.get(key)
                        if f is not None and data.get(key) in get_args(f.annotation):
                            return m
        return tp
    return tp


def _describe_type(tp: Any) -> str:
    tp = _branch(tp, None)
    if tp is None:
        return "a value"
    if get_origin(tp) is Literal:
        opts = [repr(a) for a in get_args(tp)]
        return opts[0] if len(opts) == 1 else ", ".join(opts[:-1]) + " or " + opts[-1]
    if get_origin(tp) in (Union, types.UnionType):
        return "a mapping"  # a tagged union of models
    if get_origin(tp) is list:
        return "a list"
    if get_origin(tp) is dict or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, "a value")


def _known_fields(fpath: FieldPath, data: object) -> list[str]:
    tp = _annotation_at(fpath, data)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [(f.alias or n) for n, f in tp.model_fields.items()]
    return []


def _to_policy_error(doc: ParsedDocument, err: ErrorDetails) -> PolicyError:
    fpath = _field_path(tuple(err["loc"]), doc.value)
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    given = err.get("input", _MISSING)
    got = describe_value(given)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        key = str(ctx.get("discriminator", "")).strip("'\"")
        fpath = (*fpath, key)
        expected = _one_of(_TAGS.get(key, ()))
        if kind == "union_tag_invalid":
            message = f"unknown {key} (got {describe_value(ctx.get('tag'))}; expected {expected})"
        else:
            message = f"missing required field (got nothing; expected {expected})"
    elif kind == "missing":
        expected = _describe_type(_annotation_at(fpath, doc.value))
        message = f"missing required field (got nothing; expected {expected})"
    elif kind == "extra_forbidden":
        name = str(fpath[-1]) if fpath else "?"
        known = _known_fields(fpath[:-1], doc.value)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        expected = f"'{close[0]}'" if close else "one of " + ", ".join(known)
        message = f"unknown field (got '{name}'; expected {expected})"
    elif kind == "value_error" and isinstance(ctx.get("error"), PolicyValueError):
        exc: PolicyValueError = ctx["error"]
        fpath = (*fpath, *exc.field)
        message = str(exc)
    elif kind in _TYPE_NAMES:
        expected = _TYPE_NAMES[kind]
        _, info = doc.locate(fpath)
        if kind == "string_type" and info is not None and info.raw:
            expected += f' (quote it: "{info.raw}")'
            got = info.raw
        message = f"wrong type (got {got}; expected {expected})"
    elif kind in _BOUNDS:
        what, op, key = _BOUNDS[kind]
        message = f"{what} (got {got}; expected {op} {ctx.get(key)})"
    elif kind == "literal_error":
        message = f"not an allowed value (got {got}; expected {ctx.get('expected')})"
    elif kind in ("too_short", "string_too_short"):
        n = ctx.get("min_length")
        unit = "character" if kind == "string_too_short" else "item"
        message = f"too short (got {got}; expected at least {n} {unit}{'s' if n != 1 else ''})"
    elif kind == "recursion_loop":
        message = "refers to itself (got a cyclic YAML alias; expected a tree)"
    else:
        message = _reshape(str(err["msg"]).removeprefix("Value error, "), got)
    line, _ = doc.locate(fpath)
    return PolicyError(doc.path, line, render_path(fpath) or "document", message)


_TRAILING_EXPECTED = re.compile(r"^(?P<what>.*?)\s*\(expected (?P<expected>.*)\)$", re.S)


def _reshape(what: str, got: str) -> str:
    """A plain ValueError's text in the `what (got X; expected Y)` shape, so rules written without
    PolicyValueError still print like every other error."""
    if "(got " in what:
        return what
    m = _TRAILING_EXPECTED.match(what)
    if m:
        return f"{m['what']} (got {got}; expected {m['expected']})"
    return f"{what} (got {got})"


def _one_of(tags: tuple[str, ...]) -> str:
    return "one of " + ", ".join(tags) if tags else "a known value"
