"""The command language: every command parses, bad input gets usage + problem + suggestion."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.commands.parser import (
    MAX_INPUT_CHARS,
    ParsedCommand,
    ParseError,
    parse,
    quote,
    tokenize,
)
from bot.commands.registry import CORE_COMMANDS, HANDLERS
from bot.commands.table import COMMANDS, is_destructive


def ok(text: str) -> ParsedCommand:
    r = parse(text)
    assert isinstance(r, ParsedCommand), r.message if isinstance(r, ParseError) else r
    return r


def bad(text: str) -> ParseError:
    r = parse(text)
    assert isinstance(r, ParseError), f"{text!r} parsed as {r}"
    return r


@pytest.mark.parametrize(
    "text, name, args, options",
    [
        ("create demo", "create", {"name": "demo"}, {}),
        (
            "create train profile=gpu workers=2 gpus=1 ttl=4h namespace=ray-gpu",
            "create",
            {"name": "train"},
            {"profile": "gpu", "workers": 2, "gpus": 1, "ttl": timedelta(hours=4), "namespace": "ray-gpu"},
        ),
        ("list", "list", {}, {}),
        ("ls namespace=ray-nlp", "list", {}, {"namespace": "ray-nlp"}),
        ("status demo", "status", {"name": "demo"}, {}),
        ("status ray-nlp/demo", "status", {"name": "demo"}, {"namespace": "ray-nlp"}),
        ("scale demo 3", "scale", {"name": "demo", "n": 3}, {}),
        (
            "scale demo 0 group=gpu for=1h30m",
            "scale",
            {"name": "demo", "n": 0},
            {"group": "gpu", "for": timedelta(minutes=90)},
        ),
        ("delete demo", "delete", {"name": "demo"}, {}),
        ("extend demo 4h", "extend", {"name": "demo", "duration": timedelta(hours=4)}, {}),
        ("why demo", "why", {"name": "demo"}, {}),
        ("pause demo", "pause", {"name": "demo"}, {}),
        ("resume demo", "resume", {"name": "demo"}, {}),
        ("policy demo", "policy", {"name": "demo"}, {}),
        ("connect demo", "connect", {"name": "demo"}, {}),
        ("approve k3j2mq7x", "approve", {"id": "k3j2mq7x"}, {}),
        ("approve K3J2MQ7X", "approve", {"id": "k3j2mq7x"}, {}),
        ("deny k3j2mq7x", "deny", {"id": "k3j2mq7x"}, {}),
        (
            "deny k3j2mq7x too many GPUs = bad",
            "deny",
            {"id": "k3j2mq7x", "reason": "too many GPUs = bad"},
            {},
        ),
        ("pending", "pending", {}, {}),
        ("confirm", "confirm", {}, {}),
        ("confirm k3j2mq7x", "confirm", {"id": "k3j2mq7x"}, {}),
        ("cancel", "cancel", {}, {}),
        ("pause-all", "pause-all", {}, {}),
        ("resume-all", "resume-all", {}, {}),
        ("release legacy", "release", {"name": "legacy"}, {}),
        ("whoami", "whoami", {}, {}),
        ("help", "help", {}, {}),
        ("help scale", "help", {"command": "scale"}, {}),
        ("help ls", "help", {"command": "list"}, {}),
        ("/ray status demo", "status", {"name": "demo"}, {}),
        ("!ray status demo", "status", {"name": "demo"}, {}),
        ("STATUS demo", "status", {"name": "demo"}, {}),
        ("create demo --workers=2", "create", {"name": "demo"}, {"workers": 2}),
        ('create "demo" profile="small"', "create", {"name": "demo"}, {"profile": "small"}),
        ("create demo profile=\u201csmall\u201d", "create", {"name": "demo"}, {"profile": "small"}),
        ("  status\t demo  ", "status", {"name": "demo"}, {}),
    ],
)
def test_every_command_parses(
    text: str, name: str, args: dict[str, object], options: dict[str, object]
) -> None:
    p = ok(text)
    assert (p.name, dict(p.args), dict(p.options)) == (name, args, options)


def test_the_table_and_the_handlers_name_the_same_commands() -> None:
    assert {c.name for c in COMMANDS} == set(HANDLERS) | set(CORE_COMMANDS)


@pytest.mark.parametrize(
    "text, problem, suggestion",
    [
        ("creat demo", "unknown command 'creat'", "Did you mean `create`?"),
        ("stauts demo", "unknown command 'stauts'", "Did you mean `status`?"),
        ("pauseal", "unknown command 'pauseal'", "Did you mean `pause-all`?"),
        ("xyzzy", "unknown command 'xyzzy'", "Commands: create, list"),
        ("create demo profil=gpu", "unknown option 'profil'", "Did you mean `profile=`?"),
        ("create demo profile gpu", "unexpected 'profile'", "did you mean `profile=...`?"),
        ("help scle", "no command 'scle'; did you mean `scale`?", None),
        ("create Demo", "'Demo' is not a valid cluster name", None),
        ("status demo_1", "'demo_1' is not a valid cluster name", None),
        ("status 1demo", "starts with a letter", None),
        ("status " + "a" * 60, "at most 54 characters", None),
        ("status ns_x/demo", "is not NAMESPACE/NAME", None),
        ("scale demo x", "N must be a whole number from 0 to 1000 (got 'x')", None),
        ("scale demo -1", "N must be a whole number", None),
        ("scale demo 1.5", "N must be a whole number", None),
        ("scale demo 1001", "from 0 to 1000", None),
        ("scale demo 99999999999999999999", "N must be a whole number", None),
        ("scale demo \u0663", "N must be a whole number", None),
        ("scale demo", "missing N", None),
        ("scale", "missing NAME", None),
        ("create demo workers=two", "workers= must be a whole number", None),
        ("create demo gpus=1e3", "gpus= must be a whole number", None),
        ("create demo workers=1 workers=2", "option 'workers' given twice", None),
        ("create demo workers=", "workers= is empty", None),
        ("create demo ttl=forever", "ttl= must be a duration", None),
        ("create demo ttl=0s", "ttl= must be a duration above 0", None),
        ("extend demo 400d", "at most 365d", None),
        ("extend demo 99999999999999999999999d", "must be a duration", None),
        ("approve 123", "ID is not a request id", None),
        ("approve ../../etc/passwd", "ID is not a request id", None),
        ("list foo", "unexpected 'foo'", None),
        ("whoami please", "unexpected 'please'", None),
        ("pause-all now=1", "`pause-all` takes no options", None),
        ("create demo namespace=Bad_NS", "namespace= 'Bad_NS' is not valid", None),
        ("status a/demo namespace=b", "two namespaces given", None),
        ("", "empty command", "Commands:"),
        ("   ", "empty command", None),
        ("status 'demo", "unclosed ' quote", "Close the quote"),
        ('status "demo', 'unclosed " quote', None),
        ("status demo\u200b", "invisible or control character (U+200B)", None),
        ("status demo\x00", "control character (U+0000)", None),
        ("status \u202edemo", "U+202E", None),
        ("status d\u00e9mo", "is not a valid cluster name", None),
        ("status \U0001f680", "is not a valid cluster name", None),
        ("x" * (MAX_INPUT_CHARS + 1), "too long", None),
    ],
)
def test_bad_input_says_what_was_wrong(text: str, problem: str, suggestion: str | None) -> None:
    e = bad(text)
    assert problem in e.message
    if suggestion:
        assert suggestion in e.message
    assert e.message.strip()


def test_errors_about_a_command_carry_its_usage() -> None:
    e = bad("scale demo lots")
    assert e.usage == "scale NAME N [group=GROUP] [for=DURATION] [namespace=NS]"
    assert e.message.splitlines()[-1] == f"Usage: {e.usage}"


def test_a_wrongly_cased_name_gets_the_lowercase_suggestion() -> None:
    assert "did you mean 'demo'?" in bad("status DEMO").message


def test_ten_thousand_characters_are_refused_quickly_and_shown_short() -> None:
    e = bad("create " + "a" * 10_000)
    assert "10007 characters" in e.message
    assert len(e.message) < 300


def test_a_long_word_is_shortened_in_the_message() -> None:
    e = bad("create " + "Q" * 500)
    assert len(e.message) < 400


@pytest.mark.parametrize(
    "text, words",
    [
        ('a "b c" d', ["a", "b c", "d"]),
        ("a 'b \"c' d", ["a", 'b "c', "d"]),
        (r'a "b \" c"', ["a", 'b " c']),
        (r"a b\ c", ["a", "b c"]),
        ('key="x y"', ["key=x y"]),
        ('""', [""]),
        ("a\u00a0b", ["a", "b"]),
        ("\u201cx y\u201d", ["x y"]),
        ("a \\", ["a", "\\"]),
    ],
)
def test_tokenizer_quoting(text: str, words: list[str]) -> None:
    assert tokenize(text) == words


def test_destructive_commands() -> None:
    assert is_destructive("delete", None)
    assert is_destructive("release", None)
    assert is_destructive("scale", 0)
    assert not is_destructive("scale", 1)
    assert not is_destructive("create", None)


@given(st.text(max_size=200))
def test_tokenize_never_raises(text: str) -> None:
    tokenize(text)


@given(st.text(max_size=60))
def test_quote_round_trips(text: str) -> None:
    quoted = quote(text)
    if any(c in text for c in "\x00"):
        return
    words = tokenize(quoted)
    assert words == [text] if text else words in ([""], [])


@given(st.text(max_size=300))
def test_parse_never_raises_and_always_says_something(text: str) -> None:
    r = parse(text)
    if isinstance(r, ParseError):
        assert r.message.strip()
    else:
        # The canonical text is what approvals and confirmations store: it must parse back.
        again = parse(r.text)
        assert again == r, (text, r.text)
