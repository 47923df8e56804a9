"""Text to `ParsedCommand`, or a `ParseError` that tells the person how to fix it. Never raises.

Words are separated by whitespace; double or single quotes group words (Slack's curly double quotes
count as double quotes); a backslash escapes the next character outside single quotes. Options are
`key=value` (a leading `--` is tolerated). Every value is checked here, against the command table
(`bot.commands.table`), so handlers receive only well-formed names, numbers and durations: a name
that is not a Kubernetes name, a number that is not one, or a word that is almost a command comes
back as the usage line, what was wrong, and a suggestion for the near miss.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from bot.commands.table import (
    ALIASES,
    BY_NAME,
    COMMANDS,
    MAX_DURATION_DAYS,
    CommandSpec,
    Kind,
    Param,
)
from controller.names import cluster_name_problem, namespace_problem
from controller.policy.durations import format_duration, parse_duration

MAX_INPUT_CHARS = 1000
ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
ID_LENGTH = 8
_ID = re.compile(f"^[{ID_ALPHABET}]{{{ID_LENGTH}}}$")
_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_COUNT = re.compile(r"^[0-9]{1,7}$")
_OPTION = re.compile(r"^(?:--?)?([A-Za-z][A-Za-z0-9_-]{0,30})=(.*)$", re.DOTALL)
_PREFIXES = ("ray", "/ray", "!ray")
_DOUBLE_QUOTES = {"\u201c": '"', "\u201d": '"', "\u201e": '"'}  # what chat clients "smarten" " into

Value = str | int | timedelta


@dataclass(frozen=True)
class ParseError:
    """What was wrong, in three parts every adapter shows: the problem, the usage, a suggestion."""

    problem: str
    usage: str | None = None
    suggestion: str | None = None
    command: str | None = None  # the command it was about, when known

    @property
    def message(self) -> str:
        lines = [self.problem]
        if self.suggestion:
            lines.append(self.suggestion)
        if self.usage:
            lines.append(f"Usage: {self.usage}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ParsedCommand:
    """A well-formed command. `args` holds positional values by lowercase name (`name`, `n`,
    `duration`, `id`), `options` the `key=value` ones; `text` is a canonical form that parses back
    to the same command (what confirmations, approvals and the audit log keep)."""

    spec: CommandSpec
    args: Mapping[str, Value] = field(default_factory=dict)
    options: Mapping[str, Value] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def str_value(self, key: str) -> str | None:
        v = self.args.get(key, self.options.get(key))
        return v if isinstance(v, str) else None

    def int_value(self, key: str) -> int | None:
        v = self.args.get(key, self.options.get(key))
        return v if isinstance(v, int) else None

    def duration_value(self, key: str) -> timedelta | None:
        v = self.args.get(key, self.options.get(key))
        return v if isinstance(v, timedelta) else None

    @property
    def text(self) -> str:
        words = [self.name]
        for p in self.spec.params:
            if p.key in self.args:
                words.append(_render(self.args[p.key], p.kind))
        for o in self.spec.options:
            if o.key in self.options:
                words.append(f"{o.name}={_render(self.options[o.key], o.kind)}")
        return " ".join(words)


def _render(v: Value, kind: Kind) -> str:
    if isinstance(v, timedelta):
        return format_duration(v)
    if isinstance(v, int):
        return str(v)
    return quote(v) if kind is Kind.TEXT else v


def quote(text: str) -> str:
    """Quote free text so that `tokenize` gives it back as one word."""
    if text and not any(c.isspace() or c in "\"'\\" + "".join(_DOUBLE_QUOTES) for c in text):
        return text
    specials = set('"\\') | set(_DOUBLE_QUOTES)
    return '"' + "".join("\\" + c if c in specials else c for c in text) + '"'


def tokenize(text: str) -> list[str] | ParseError:
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote_char: str | None = None
    quote_start = 0
    i, n = 0, len(text)
    while i < n:
        c = _DOUBLE_QUOTES.get(text[i], text[i])
        if quote_char is not None:
            if c == quote_char:
                quote_char = None
            elif c == "\\" and quote_char == '"' and i + 1 < n:
                i += 1
                current.append(text[i])
            else:
                current.append(text[i])
        elif c in "\"'":
            quote_char, quote_start, in_word = c, i, True
        elif c == "\\":
            i += 1
            current.append(text[i] if i < n else "\\")  # a trailing backslash is itself
            in_word = True
        elif c.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(text[i])
            in_word = True
        i += 1
    if quote_char is not None:
        return ParseError(
            f"unclosed {quote_char} quote (opened at character {quote_start + 1})",
            suggestion="Close the quote, or leave quotes out: names and numbers need none.",
        )
    if in_word:
        words.append("".join(current))
    return words


def _bad_characters(text: str) -> str | None:
    for ch in text:
        if ch in "\t\n\r":
            continue
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return f"U+{ord(ch):04X}"
    return None


def suggest(word: str, choices: Sequence[str]) -> str | None:
    """The closest choice to a near-miss word, if any is close enough to be a likely typo."""
    matches = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _overview() -> str:
    return "Commands: " + ", ".join(c.name for c in COMMANDS) + ". Try `help COMMAND`."


def parse(text: str) -> ParsedCommand | ParseError:
    if len(text) > MAX_INPUT_CHARS:
        return ParseError(
            f"that command is too long ({len(text)} characters; at most {MAX_INPUT_CHARS})",
            suggestion="Commands are short: a name, a number, a few key=value options.",
        )
    bad = _bad_characters(text)
    if bad:
        return ParseError(
            f"the command contains an invisible or control character ({bad})",
            suggestion="Retype it without pasting formatted text.",
        )
    words = tokenize(text)
    if isinstance(words, ParseError):
        return words
    if len(words) > 1 and words[0].lower() in _PREFIXES:
        words = words[1:]
    if not words:
        return ParseError("empty command", suggestion=_overview())
    head = words[0].lower()
    name = ALIASES.get(head, head)
    cmd = BY_NAME.get(name)
    if cmd is None:
        near = suggest(head, [c.name for c in COMMANDS] + list(ALIASES))
        near = ALIASES.get(near, near) if near else None
        return ParseError(
            f"unknown command '{_shorten(words[0])}'",
            suggestion=f"Did you mean `{near}`?" if near else _overview(),
        )
    return _parse_args(cmd, words[1:])


def _shorten(s: str, limit: int = 40) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _parse_args(cmd: CommandSpec, words: list[str]) -> ParsedCommand | ParseError:
    def error(problem: str, suggestion: str | None = None) -> ParseError:
        return ParseError(problem, cmd.usage, suggestion, cmd.name)

    positional: list[str] = []
    options: dict[str, Value] = {}
    text_param = next((p for p in cmd.params if p.kind is Kind.TEXT), None)
    for i, w in enumerate(words):
        if text_param is not None and len(positional) == len(cmd.params) - 1:
            positional.append(" ".join(words[i:]))  # the rest of the line is free text
            break
        m = _OPTION.match(w)
        if m is None:
            positional.append(w)
            continue
        key, raw = m.group(1).lower(), m.group(2)
        opt = cmd.option(key)
        if opt is None:
            near = suggest(key, [o.name for o in cmd.options])
            if not cmd.options:
                return error(f"`{cmd.name}` takes no options (got '{_shorten(w)}')")
            return error(
                f"unknown option '{_shorten(key)}'",
                f"Did you mean `{near}=`?" if near else "Options: " + ", ".join(o.name for o in cmd.options),
            )
        if opt.key in options:
            return error(f"option '{key}' given twice")
        value = _convert(opt, raw)
        if isinstance(value, _Bad):
            return error(value.problem)
        options[opt.key] = value[1] if isinstance(value, tuple) else value
    args: dict[str, Value] = {}
    for idx, p in enumerate(cmd.params):
        if idx >= len(positional):
            if p.required:
                return error(f"missing {p.name}" + (f" ({p.help})" if p.help else ""))
            continue
        value = _convert(p, positional[idx])
        if isinstance(value, _Bad):
            return error(value.problem)
        if isinstance(value, tuple):  # NAMESPACE/NAME
            ns, value = value
            if "namespace" in options and options["namespace"] != ns:
                return error(f"two namespaces given ({ns} and {options['namespace']})")
            options["namespace"] = ns
        args[p.key] = value
    extra = positional[len(cmd.params) :]
    if extra:
        word = extra[0]
        near = suggest(word, [o.name for o in cmd.options])
        hint = f"Options are written key=value: did you mean `{near}=...`?" if near else None
        return error(f"unexpected '{_shorten(word)}'", hint)
    return ParsedCommand(cmd, args, options)


@dataclass(frozen=True)
class _Bad:
    problem: str


def _convert(p: Param, raw: str) -> Value | tuple[str, str] | _Bad:
    """The checked value, or `_Bad` saying what is wrong (no exceptions)."""
    shown = _shorten(raw)
    label = p.name if p.name.isupper() else f"{p.name}="
    if p.kind is Kind.TEXT:
        return raw
    if raw == "":
        return _Bad(f"{label} is empty")
    if p.kind is Kind.COUNT:
        if not _COUNT.match(raw) or int(raw) > p.max_value:
            return _Bad(f"{label} must be a whole number from 0 to {p.max_value} (got '{shown}')")
        return int(raw)
    if p.kind is Kind.DURATION:
        try:
            d = parse_duration(raw) if len(raw) <= 20 else None
        except (ValueError, OverflowError):
            d = None
        if d is None or d <= timedelta(0) or d > timedelta(days=MAX_DURATION_DAYS):
            return _Bad(
                f"{label} must be a duration above 0 and at most {MAX_DURATION_DAYS}d, "
                f"like 30m, 4h, 2d or 1h30m (got '{shown}')"
            )
        return d
    if p.kind is Kind.REQUEST_ID:
        rid = raw.lower()
        if not _ID.match(rid):
            return _Bad(
                f"{label} is not a request id (got '{shown}'; ids are {ID_LENGTH} letters and digits)"
            )
        return rid
    if p.kind is Kind.COMMAND:
        name = ALIASES.get(raw.lower(), raw.lower())
        if name not in BY_NAME:
            near = suggest(name, list(BY_NAME))
            return _Bad(f"no command '{shown}'" + (f"; did you mean `{near}`?" if near else ""))
        return name
    if p.kind is Kind.NAMESPACE:
        problem = namespace_problem(raw)
        return _Bad(f"{label} '{shown}' is not valid: {problem}") if problem else raw
    if p.kind is Kind.DNS_NAME:
        if not _DNS.match(raw):
            return _Bad(f"{label} '{shown}' is not valid: use lowercase letters, digits and '-'")
        return raw
    # Kind.CLUSTER: NAME or NAMESPACE/NAME
    ns, _, name = raw.rpartition("/")
    if ns:
        problem = namespace_problem(ns)
        if problem:
            return _Bad(f"'{shown}' is not NAMESPACE/NAME: {problem}")
    problem = cluster_name_problem(name)
    if problem:
        lowered = name.lower()
        hint = (
            f" (did you mean '{lowered}'?)" if lowered != name and not cluster_name_problem(lowered) else ""
        )
        return _Bad(f"'{shown}' is not a valid cluster name: {problem}{hint}")
    return (ns, name) if ns else name
