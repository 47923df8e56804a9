"""Static checks of the PromQL in `promql` signals, before any Prometheus sees it.

Not a PromQL parser: a tokenizer that knows strings, comments and brackets, plus enough structure to
find the outermost aggregations. That catches the two mistakes that otherwise surface only at run
time, as a signal that is "unavailable" forever:

- brackets or quotes that do not balance (Prometheus would answer 400 on every tick);
- an outermost aggregation that drops a mapping label (contracts.md section 5): `sum(x)`,
  `sum by (namespace) (x)` or `sum without (ray_io_group) (x)` returns series the metrics source
  cannot attribute to a (namespace, cluster, group), so the signal never has a value.

Label lists of `on(...)`, `ignoring(...)`, `group_left(...)` and functions that rewrite labels
(`label_replace`) are not interpreted: the check errs on the side of accepting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.keys import METRIC_MAPPING_LABELS

# Aggregations that reduce series to the labels of their `by` clause (all labels minus `without`).
AGGREGATIONS = frozenset(
    {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "group", "quantile", "count_values"}
)
# "Aggregations" that pick series and keep their labels unless given a clause.
SELECTIONS = frozenset({"topk", "bottomk", "limitk", "limit_ratio"})
_BINARY_MODIFIERS = frozenset({"on", "ignoring", "group_left", "group_right"})
_PAIRS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {v: k for k, v in _PAIRS.items()}


@dataclass(frozen=True)
class Token:
    kind: str  # "ident", "string", "number", "punct", "other"
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class QueryProblem:
    what: str
    got: str
    expected: str

    def __str__(self) -> str:
        return f"{self.what} (got {self.got}; expected {self.expected})"


class _LexError(Exception):
    def __init__(self, problem: QueryProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _where(query: str, offset: int) -> str:
    line = query.count("\n", 0, offset) + 1
    col = offset - (query.rfind("\n", 0, offset) + 1) + 1
    return f"column {col}" if "\n" not in query else f"line {line} column {col} of the query"


def tokenize(query: str) -> list[Token]:
    """Tokens of a query; raises _LexError on an unterminated string."""
    tokens: list[Token] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
        elif c == "#":  # comment to end of line
            while i < n and query[i] != "\n":
                i += 1
        elif c in "\"'`":
            j = i + 1
            while j < n and query[j] != c:
                j += 2 if (query[j] == "\\" and c != "`") else 1
            if j >= n:
                raise _LexError(
                    QueryProblem(
                        f"unterminated string starting at {_where(query, i)}",
                        repr(query[i : i + 20]),
                        f"a closing {c}",
                    )
                )
            tokens.append(Token("string", query[i : j + 1], i, j + 1))
            i = j + 1
        elif c.isalpha() or c in "_:":
            j = i
            while j < n and (query[j].isalnum() or query[j] in "_:"):
                j += 1
            tokens.append(Token("ident", query[i:j], i, j))
            i = j
        elif c.isdigit() or (c == "." and i + 1 < n and query[i + 1].isdigit()):
            j = i
            while j < n and (query[j].isalnum() or query[j] in "._"):
                j += 1
            tokens.append(Token("number", query[i:j], i, j))
            i = j
        elif c in "()[]{},":
            tokens.append(Token("punct", c, i, i + 1))
            i += 1
        else:
            tokens.append(Token("other", c, i, i + 1))
            i += 1
    return tokens


def _match_brackets(query: str, tokens: Sequence[Token]) -> dict[int, int]:
    """Index of each opening bracket's partner; raises _LexError naming the first imbalance."""
    stack: list[int] = []
    partner: dict[int, int] = {}
    for k, t in enumerate(tokens):
        if t.kind != "punct":
            continue
        if t.text in _PAIRS:
            stack.append(k)
        elif t.text in _CLOSERS:
            if not stack:
                raise _LexError(
                    QueryProblem(
                        f"unbalanced brackets: '{t.text}' at {_where(query, t.start)} closes nothing",
                        repr(query),
                        f"a matching '{_CLOSERS[t.text]}' before it",
                    )
                )
            opener = tokens[stack[-1]]
            if _PAIRS[opener.text] != t.text:
                raise _LexError(
                    QueryProblem(
                        f"unbalanced brackets: '{t.text}' at {_where(query, t.start)} closes "
                        f"'{opener.text}' from {_where(query, opener.start)}",
                        repr(query),
                        f"'{_PAIRS[opener.text]}'",
                    )
                )
            partner[stack.pop()] = k
    if stack:
        opener = tokens[stack[-1]]
        raise _LexError(
            QueryProblem(
                f"unbalanced brackets: '{opener.text}' at {_where(query, opener.start)} is never closed",
                repr(query),
                f"a matching '{_PAIRS[opener.text]}'",
            )
        )
    return partner


@dataclass(frozen=True)
class Aggregation:
    op: str
    op_token: Token
    clause: str | None  # "by", "without" or None
    labels: tuple[str, ...]
    labels_open: Token | None  # the '(' of the label list
    labels_close: Token | None

    def missing(self, required: Sequence[str]) -> list[str]:
        if self.clause == "by":
            return [x for x in required if x not in self.labels]
        if self.clause == "without":
            return [x for x in required if x in self.labels]
        return list(required)


def outermost_aggregations(query: str) -> list[Aggregation]:
    """Aggregations whose result reaches the top of the query (not nested in another aggregation)."""
    tokens = tokenize(query)
    partner = _match_brackets(query, tokens)
    found: list[Aggregation] = []
    _scan(tokens, partner, 0, len(tokens), found)
    return found


def _label_list(tokens: Sequence[Token], partner: dict[int, int], k: int) -> tuple[tuple[str, ...], int]:
    """Labels of the `(a, b)` opening at token k, and the index after its ')'."""
    end = partner[k]
    labels = tuple(t.text.strip("\"'`") for t in tokens[k + 1 : end] if t.kind in ("ident", "string"))
    return labels, end + 1


def _scan(
    tokens: Sequence[Token], partner: dict[int, int], lo: int, hi: int, found: list[Aggregation]
) -> None:
    k = lo
    while k < hi:
        t = tokens[k]
        nxt = tokens[k + 1] if k + 1 < hi else None
        if t.kind == "punct" and t.text in "[{":  # range or label matchers: no expressions inside
            k = partner[k] + 1
            continue
        if t.kind == "ident" and t.text in _BINARY_MODIFIERS and nxt is not None and nxt.text == "(":
            k = partner[k + 1] + 1
            continue
        is_agg = t.kind == "ident" and t.text in AGGREGATIONS | SELECTIONS
        if is_agg and nxt is not None and (nxt.text == "(" or nxt.text in ("by", "without")):
            k = _aggregation(tokens, partner, k, hi, found)
            continue
        k += 1


def _aggregation(
    tokens: Sequence[Token], partner: dict[int, int], k: int, hi: int, found: list[Aggregation]
) -> int:
    op = tokens[k]
    j = k + 1
    clause: str | None = None
    labels: tuple[str, ...] = ()
    lopen: Token | None = None
    lclose: Token | None = None
    if tokens[j].text in ("by", "without") and j + 1 < hi and tokens[j + 1].text == "(":
        clause, lopen, lclose = tokens[j].text, tokens[j + 1], tokens[partner[j + 1]]
        labels, j = _label_list(tokens, partner, j + 1)
    if j >= hi or tokens[j].text != "(":
        return j  # not an aggregation after all (e.g. a metric named `sum`)
    args_lo, args_hi = j + 1, partner[j]
    j = partner[j] + 1
    if clause is None and j + 1 < hi and tokens[j].text in ("by", "without") and tokens[j + 1].text == "(":
        clause, lopen, lclose = tokens[j].text, tokens[j + 1], tokens[partner[j + 1]]
        labels, j = _label_list(tokens, partner, j + 1)
    if op.text in SELECTIONS and clause is None:
        _scan(tokens, partner, args_lo, args_hi, found)  # keeps its argument's labels
    else:
        found.append(Aggregation(op.text, op, clause, labels, lopen, lclose))
    return j


def _fixed(query: str, aggs: Sequence[Aggregation], required: Sequence[str]) -> str:
    edits: list[tuple[int, int, str]] = []
    for a in aggs:
        missing = a.missing(required)
        if not missing:
            continue
        if a.clause == "by" and a.labels_open is not None and a.labels_close is not None:
            edits.append((a.labels_open.start, a.labels_close.end, f"({', '.join([*a.labels, *missing])})"))
        elif a.clause == "without" and a.labels_open is not None and a.labels_close is not None:
            kept = [x for x in a.labels if x not in required]
            edits.append((a.labels_open.start, a.labels_close.end, f"({', '.join(kept)})"))
        else:
            edits.append((a.op_token.end, a.op_token.end, f" by ({', '.join(required)}) "))
    out = query
    for start, end, text in sorted(edits, reverse=True):
        out = out[:start] + text + out[end:]
    return out


def check_query(query: str, required: Sequence[str] = METRIC_MAPPING_LABELS) -> QueryProblem | None:
    """The first problem with a query, or None. Pure and fast: run on every policy check."""
    if not query.strip():
        return QueryProblem("empty query", "''", "a PromQL expression")
    try:
        aggs = outermost_aggregations(query)
    except _LexError as e:
        return e.problem
    missing: list[str] = []
    for a in aggs:
        missing += [x for x in a.missing(required) if x not in missing]
    if not missing:
        return None
    ordered = [x for x in required if x in missing]
    plural = "s" if len(ordered) > 1 else ""
    return QueryProblem(
        f"the outermost aggregation drops the mapping label{plural} {', '.join(ordered)}",
        " ".join(query.split()),
        " ".join(_fixed(query, aggs, required).split()),
    )
