"""Label and field selectors with the API server's grammar and its edge semantics.

The parts tests trip over on real servers are reproduced on purpose: `!=` and `notin` also match objects that
lack the label; a field selector on an unset field compares against the empty string (so `spec.nodeName=`
finds unscheduled pods); a field the resource does not index is a 400, not an empty list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector the server would answer with 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("gt", "lt"):
            try:
                have, want = int(value or ""), int(self.values[0])
            except ValueError:
                return False
            return have > want if self.op == "gt" else have < want
        raise AssertionError(self.op)


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\((.*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=|>|<)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `( )` value sets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    if not text or not text.strip():
        return ()
    reqs: list[Requirement] = []
    for part in _split_top_level(text):
        if m := _SET_RE.match(part):
            values = tuple(v.strip() for v in m.group(4).split(",") if v.strip())
            if not values or not all(_VALUE_RE.match(v) for v in values):
                raise SelectorError(f"unable to parse requirement: invalid values in {part.strip()!r}")
            reqs.append(Requirement(m.group(1), m.group(3), values))
        elif m := _CMP_RE.match(part):
            op = {"==": "=", "=": "=", "!=": "!=", ">": "gt", "<": "lt"}[m.group(3)]
            reqs.append(Requirement(m.group(1), op, (m.group(4),)))
        elif m := _EXISTS_RE.match(part):
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {part.strip()!r}")
    return tuple(reqs)


def labels_match(reqs: tuple[Requirement, ...], obj: Mapping[str, Any]) -> bool:
    if not reqs:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool


def _unescape_split(text: str, sep: str) -> list[str]:
    """Split on `sep` honouring backslash escapes (`\\,`, `\\=`), as the server's field lexer does."""
    out, cur, i = [], "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur += text[i + 1]
            i += 2
            continue
        if text.startswith(sep, i):
            out.append(cur)
            cur = ""
            i += len(sep)
            continue
        cur += ch
        i += 1
    out.append(cur)
    return out


def parse_field_selector(text: str | None, supported: frozenset[str]) -> tuple[FieldRequirement, ...]:
    if not text or not text.strip():
        return ()
    reqs: list[FieldRequirement] = []
    for part in _unescape_split(text, ","):
        for op, negate in (("!=", True), ("==", False), ("=", False)):
            if op in part:
                key, _, value = part.partition(op)
                key = key.strip()
                if key not in supported:
                    raise SelectorError(f"field label not supported: {key}")
                reqs.append(FieldRequirement(key, value.strip(), negate))
                break
        else:
            raise SelectorError(f"invalid selector: {part!r}; can't understand '{part}'")
    return tuple(reqs)


def field_value(obj: Mapping[str, Any], dotted: str) -> str:
    """The string a server indexes for a field; unset reads as "" and booleans as "true"/"false"."""
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
        if node is None:
            return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def fields_match(
    reqs: tuple[FieldRequirement, ...],
    obj: Mapping[str, Any],
    extract: Callable[[Mapping[str, Any], str], str] = field_value,
) -> bool:
    for req in reqs:
        equal = extract(obj, req.field) == req.value
        if equal == req.negate:
            return False
    return True
