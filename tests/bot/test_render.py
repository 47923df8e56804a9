"""Rendering: plain text, Matrix HTML and Block Kit from one Reply; the status chart."""

from __future__ import annotations

from datetime import timedelta

from bot.adapters.base import Button, ButtonStyle, Image, Reply, ReplyField, ReplyStatus, Table
from bot.chart import EventHistory, HistoryPoint, render_chart
from bot.render import ACTION_ID_PREFIX, table_text, to_blocks, to_html, to_text
from controller.domain import ClusterRef
from controller.events import Event, EventType
from tests.bot.conftest import T0

REPLY = Reply(
    "demo in ray-nlp: READY <ok> & fine",
    ReplyStatus.OK,
    title="Ray cluster demo",
    fields=(ReplyField("State", "READY"), ReplyField("Workers ready/desired", "workers 2/3")),
    table=Table(("GROUP", "READY"), (("workers", "2"), ("gpu", "0"))),
    buttons=(Button("Confirm", "confirm abcdefgh", ButtonStyle.DANGER), Button("Cancel", "cancel abcdefgh")),
    footer="All autoscaling is paused globally.",
)


def test_text_has_every_part_in_order() -> None:
    assert to_text(REPLY).splitlines() == [
        "Ray cluster demo",
        "demo in ray-nlp: READY <ok> & fine",
        "  State                  READY",
        "  Workers ready/desired  workers 2/3",
        "GROUP    READY",
        "workers  2",
        "gpu      0",
        "[Confirm: `confirm abcdefgh`]   [Cancel: `cancel abcdefgh`]",
        "All autoscaling is paused globally.",
    ]


def test_html_escapes() -> None:
    html = to_html(REPLY)
    assert "<b>Ray cluster demo</b>" in html
    assert "&lt;ok&gt; &amp; fine" in html
    assert "<li><b>State</b>: READY</li>" in html
    assert "<code>confirm abcdefgh</code>" in html


def test_block_kit_shape() -> None:
    blocks = to_blocks(REPLY)
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "context", "actions"]
    assert blocks[1]["text"]["text"] == "demo in ray-nlp: READY &lt;ok&gt; &amp; fine"
    assert blocks[2]["fields"][1]["text"] == "*Workers ready/desired*\nworkers 2/3"
    assert blocks[3]["text"]["text"].startswith("```GROUP")
    confirm, cancel = blocks[5]["elements"]
    assert confirm == {
        "type": "button",
        "action_id": f"{ACTION_ID_PREFIX}0",
        "text": {"type": "plain_text", "text": "Confirm", "emoji": False},
        "value": "confirm abcdefgh",
        "style": "danger",
    }
    assert "style" not in cancel and cancel["action_id"] == f"{ACTION_ID_PREFIX}1"


def test_block_kit_limits() -> None:
    big = Reply(
        "x" * 5000,
        title="t" * 300,
        fields=tuple(ReplyField(f"f{i}", "v" * 3000) for i in range(23)),
        buttons=tuple(Button(f"b{i}" * 40, f"help {i}") for i in range(30)),
    )
    blocks = to_blocks(big)
    assert len(blocks[0]["text"]["text"]) <= 150
    assert len(blocks[1]["text"]["text"]) <= 3000
    field_sections = [b for b in blocks if "fields" in b]
    assert [len(b["fields"]) for b in field_sections] == [10, 10, 3]
    assert all(len(f["text"]) <= 2000 for b in field_sections for f in b["fields"])
    assert len(blocks[-1]["elements"]) == 25
    assert all(len(e["text"]["text"]) <= 75 for e in blocks[-1]["elements"])


def test_minimal_reply() -> None:
    r = Reply("hello")
    assert to_text(r) == "hello"
    assert to_blocks(r) == [{"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}]
    assert Reply("x", image=Image("a.png", b"png")).image is not None


def test_long_tables_are_cut() -> None:
    t = Table(("A",), tuple((str(i),) for i in range(80)))
    assert table_text(t, max_rows=10).splitlines()[-1] == "... and 70 more"


def test_chart_is_a_small_png() -> None:
    points = [
        HistoryPoint(T0 + timedelta(minutes=m), r, d, p)
        for m, r, d, p in [(0, 0, 1, 2), (10, 1, 3, 4), (30, 3, 3, 0)]
    ]
    png = render_chart(points, "demo: workers vs demand", T0 + timedelta(minutes=45), timedelta(hours=1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert 2_000 < len(png) < 200_000
    assert render_chart([], "empty", T0, timedelta(hours=1))[:4] == b"\x89PNG"


def test_history_sums_groups_from_events() -> None:
    ref = ClusterRef("ns", "c")
    evs = [
        Event(EventType.SCALED_UP, "", T0, ref, data={"group": "a", "target": 2, "ready": 1, "pending": 3}),
        Event(
            EventType.SCALED_UP,
            "",
            T0 + timedelta(minutes=1),
            ref,
            data={"group": "b", "target": 1, "ready": 0},
        ),
        Event(EventType.CLUSTER_READY, "", T0 + timedelta(minutes=2), ref),
        Event(EventType.HELD, "", T0 + timedelta(minutes=3), ref, data={"group": "a", "ready": 2}),
    ]
    hist = EventHistory(lambda r: evs)
    assert [(p.ready, p.desired, p.pending) for p in hist.points(ref, T0)] == [
        (1, 2, 3),
        (1, 3, 3),
        (2, 3, 3),
    ]
    assert [p.at for p in hist.points(ref, T0 + timedelta(seconds=90))] == [T0 + timedelta(minutes=3)]
    assert len(hist.events(ref, 2)) == 2
