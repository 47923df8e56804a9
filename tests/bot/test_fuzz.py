"""Fuzzing the parser and the handlers: never an exception, always a message, no stray changes.

Each example builds a fresh bot over the memory backend, seeded with a few clusters and a pending
request, then runs one command (or a short sequence) from random people. Invariants:
- the bot answers every command with a non-empty message and raises nothing;
- an answer that is an error, a refusal, a pending approval or a confirmation request leaves every
  cluster exactly as it was; a refusal also adds no request and leaves the global switch alone;
- no cluster is ever created twice without a delete in between.
`HYPOTHESIS_PROFILE=ci` runs the single-command properties 10,000 times; the sequence and async
properties, each example of which runs several commands or an event loop, at most 2,000 times,
so the suite stays within its time limits on a shared CI machine.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.adapters.base import IncomingCommand, Platform, ReplyStatus
from bot.authz import Identity
from bot.commands.table import COMMANDS
from bot.render import to_blocks, to_html, to_text
from controller import keys
from controller.backends.base import ClusterRequest, GroupStatus
from controller.domain import ClusterRef
from tests.bot.conftest import ALICE, APPROVER, BOB, MATRIX_ALICE, OPS, STRANGER, Harness, make_harness

PEOPLE = [
    ALICE,
    BOB,
    OPS,
    APPROVER,
    STRANGER,
    MATRIX_ALICE,
    Identity(Platform.CONSOLE, "alice"),
    Identity(Platform.CONSOLE, "nobody"),
    Identity(Platform.SLACK, "U0CAROL", "", frozenset({"S0TEAM"})),
]
SEEDED_REQUEST = "kq7m2x9p"

_UNCHANGING = (ReplyStatus.ERROR, ReplyStatus.REFUSED, ReplyStatus.PENDING, ReplyStatus.CONFIRM)


def seeded() -> Harness:
    h = make_harness(Path("/nonexistent-state-dir"))
    h.backend.create(ClusterRequest("demo", "ray-nlp", "small", "slack:U0ALICE"))
    h.backend.create(ClusterRequest("train", "ray-gpu", "gpu", "slack:U0ALICE", gpus=1))
    h.backend.create(ClusterRequest("other", "kube-system", "small", "slack:U0OPS"))
    h.backend.add_cluster(
        ClusterRef("ray-nlp", "legacy"),
        (GroupStatus("workers", 1, 1, 0, 4, {"CPU": 1.0}),),
        labels={keys.LABEL_MANAGED: keys.MANAGED_VALUE},
    )
    from bot.approvals import ApprovalRequest

    h.approvals.add(
        ApprovalRequest(
            SEEDED_REQUEST,
            "slack:U0BOB",
            "create big workers=6",
            ("workers 6 > 4",),
            h.clock(),
            h.clock() + (h.bot._access().request_expiry),
        )
    )
    h.backend.calls.clear()
    return h


def check_one(h: Harness, who: Identity, text: str) -> ReplyStatus:
    before = h.backend.snapshot()
    requests_before = {r.id for r in h.approvals.list(None)}
    switch_before = h.switch.get()
    out = h.run(who, text)
    reply = out.reply
    assert reply.text.strip(), (who, text)
    assert to_text(reply).strip() and to_html(reply) and to_blocks(reply)
    if reply.status in _UNCHANGING:
        assert h.backend.snapshot() == before, (who.key, text, reply.text)
    if reply.status is ReplyStatus.REFUSED:
        assert {r.id for r in h.approvals.list(None)} == requests_before
        assert h.switch.get() == switch_before
    return reply.status


def no_double_create(h: Harness) -> None:
    creates = Counter(ref for op, ref in h.backend.calls if op == "create")
    deletes = Counter(ref for op, ref in h.backend.calls if op == "delete")
    for ref, n in creates.items():
        assert n <= deletes[ref] + 1, (ref, h.backend.calls)


# --- strategies ---------------------------------------------------------------------------------

names = st.sampled_from(
    [
        "demo",
        "train",
        "other",
        "legacy",
        "new",
        "x",
        "Demo",
        "ray-nlp/demo",
        "kube-system/other",
        "a" * 60,
        "dem0",
        "d-",
        "",
        "demo\u200b",
        "\uff44\uff45\uff4d\uff4f",
        "ray-gpu/train",
        "../x",
    ]
)
numbers = st.sampled_from(["0", "1", "3", "4", "8", "9", "1000", "1001", "-1", "x", "1e3", "\u0663", "007"])
durations = st.sampled_from(
    ["4h", "1h30m", "0s", "30m", "2d", "400d", "abc", "1e9h", "99999999999999999999d"]
)
ids = st.sampled_from([SEEDED_REQUEST, "abcdefgh", "123", "K Q7M2X9P", "kq7m2x9"])
words = st.one_of(names, numbers, durations, ids, st.text(max_size=12))
option = st.tuples(
    st.sampled_from(
        ["profile", "workers", "gpus", "ttl", "namespace", "group", "for", "profil", "--workers", "x"]
    ),
    st.one_of(
        names,
        numbers,
        durations,
        st.sampled_from(["small", "gpu", "ray-nlp", "ray-gpu", "kube-system", "workers"]),
    ),
).map(lambda kv: f"{kv[0]}={kv[1]}")
command_names = st.sampled_from([c.name for c in COMMANDS] + ["creat", "stauts", "ls", "?", "/ray", "DELETE"])


@st.composite
def commands(draw: st.DrawFn) -> str:
    """Mostly well-formed-looking commands, with the damage people do: wrong words, quotes, junk."""
    parts = [draw(command_names)]
    parts += draw(st.lists(st.one_of(words, option), max_size=5))
    text = " ".join(parts)
    if draw(st.booleans()):
        quote = draw(st.sampled_from(['"', "'", "\u201c", "\\"]))
        at = draw(st.integers(0, len(text)))
        text = text[:at] + quote + text[at:]
    return text


people = st.sampled_from(PEOPLE)
_heavy = settings(max_examples=min(settings.default.max_examples, 2_000))


@given(people, st.text(max_size=300))
def test_any_text_from_anyone_gets_an_answer(who: Identity, text: str) -> None:
    h = seeded()
    check_one(h, who, text)
    no_double_create(h)


@given(people, commands())
def test_command_shaped_input_gets_an_answer_and_no_stray_change(who: Identity, text: str) -> None:
    h = seeded()
    check_one(h, who, text)
    no_double_create(h)


@_heavy
@given(
    st.lists(
        st.tuples(
            people,
            st.one_of(
                commands(),
                st.sampled_from(
                    [
                        "confirm",
                        "cancel",
                        f"approve {SEEDED_REQUEST}",
                        "delete demo",
                        "create demo",
                        "scale demo 0",
                    ]
                ),
            ),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_sequences_keep_every_invariant(steps: list[tuple[Identity, str]]) -> None:
    h = seeded()
    for who, text in steps:
        check_one(h, who, text)
        h.clock.advance(minutes=2)
    no_double_create(h)


@_heavy
@given(people, st.one_of(commands(), st.text(max_size=100)), st.booleans())
def test_the_async_entry_point_and_buttons_answer_too(who: Identity, value: str, typed: bool) -> None:
    h = seeded()
    cmd = IncomingCommand(
        who.platform,
        who.user_id,
        "" if not typed else value,
        who.display,
        channel_id="C1",
        is_button=not typed,
        button_value=None if typed else value,
    )
    reply = asyncio.run(h.bot.handle(cmd))
    assert reply.text.strip()
