"""The Matrix adapter through a real Synapse: people on matrix-nio clients talk to the whole bot.

The flow of issue 7: a requester asks for a cluster over their quota, the request waits, the DevOps
approver approves it by typing `!ray approve ID`, the requester is told in the thread where they
asked, the cluster's ready notification reaches them in a direct room, `status` comes with an
`m.image` chart, and `delete` is confirmed. Then what the adapter must not do (answer history, its
own messages, notices, invites from strangers), surviving a lost homeserver link with backoff, and
Synapse's own rate limit (M_LIMIT_EXCEEDED) waited out.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nio import DownloadResponse, RoomMessageImage

from bot.adapters.base import Destination, Notification, Platform, Reply
from bot.adapters.matrix import MatrixAdapter
from bot.adapters.matrix_settings import MatrixSettings
from bot.adapters.runtime import SettingsError
from bot.compose import serve
from controller.domain import ClusterRef
from controller.events import Event, EventType
from tests.bot_adapters.conftest import NAMESPACE, PROFILES, BotParts, make_bot
from tests.bot_adapters.matrix_people import Person, TcpProxy
from tests.harness.synapse import MatrixUser, SynapseServer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ACCESS = """\
apiVersion: rayops.io/v1alpha1
kind: AccessPolicy
metadata:
  name: team
spec:
  devops:
    matrix: {{room: "{devops}"}}
  approvers:
    - {{matrixUser: "{boss}"}}
  rules:
    - subjects: [{{matrixUser: "{alice}"}}]
      namespaces: [ray-nlp]
      profiles: [small]
      limits: {{clustersPerUser: 2, workersPerCluster: 4}}
"""
assert PROFILES  # the same profiles as the Slack tests (written by make_bot)


class World:
    """Users registered for one test, and the bot composed with its adapter on this event loop."""

    def __init__(self, synapse: SynapseServer, tmp: Path) -> None:
        self.synapse = synapse
        self.tmp = tmp
        self.suffix = uuid.uuid4().hex[:8]
        self.bot_user = synapse.register_user(f"rayops{self.suffix}", "pw-bot")
        self.people: list[Person] = []
        self.running: list[tuple[MatrixAdapter, asyncio.Task[None]]] = []

    def person(self, name: str) -> Person:
        p = Person.of(self.synapse, self.synapse.register_user(f"{name}{self.suffix}", f"pw-{name}"))
        self.people.append(p)
        return p

    def settings(self, **kw: Any) -> MatrixSettings:
        kw.setdefault("homeserver", self.synapse.url)
        kw.setdefault("sync_timeout_s", 1.0)
        return MatrixSettings(
            user_id=self.bot_user.user_id,
            access_token=self.bot_user.access_token,
            device_id=self.bot_user.device_id,
            **kw,
        )

    async def start(self, parts: BotParts, **settings: Any) -> MatrixAdapter:
        adapter = MatrixAdapter(self.settings(**settings))
        task = asyncio.create_task(serve(parts.bot, adapter, parts.events))
        self.running.append((adapter, task))
        ready = asyncio.create_task(adapter.wait_ready())
        done, _ = await asyncio.wait({ready, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert ready in done, f"the Matrix adapter did not become ready: {task}"
        return adapter

    async def stop(self, adapter: MatrixAdapter) -> None:
        for a, task in list(self.running):
            if a is adapter:
                await a.stop()
                await task
                self.running.remove((a, task))

    async def close(self) -> None:
        try:
            for adapter, _ in list(self.running):
                await self.stop(adapter)
        finally:
            await asyncio.gather(*(p.close() for p in self.people))


@pytest.fixture
async def world(synapse: SynapseServer, tmp_path: Path) -> AsyncIterator[World]:
    w = World(synapse, tmp_path)
    try:
        yield w
    finally:
        await w.close()


def _access(alice: Person, boss: Person, devops: str) -> str:
    return ACCESS.format(alice=alice.id, boss=boss.id, devops=devops)


def _replying_to(event_id: str) -> Callable[[Any], bool]:
    def match(s: Any) -> bool:
        rel = s.content.get("m.relates_to") or {}
        return (rel.get("m.in_reply_to") or {}).get("event_id") == event_id

    return match


async def test_requester_and_approver_run_the_whole_flow(world: World) -> None:
    alice, boss = world.person("alice"), world.person("boss")
    bot_id = world.bot_user.user_id
    devops = await boss.create_room("devops", invite=[bot_id])
    team = await alice.create_room("team", invite=[bot_id])
    parts = make_bot(world.tmp, _access(alice, boss, devops))
    await asyncio.gather(alice.start(), boss.start())
    await world.start(parts)

    # 1. Over the quota: pending, and posted to the DevOps room with what to type.
    asked = await alice.say(team, "!ray create big workers=6")
    pending = await alice.notice(team, "waits for an approver as `")
    assert _replying_to(asked)(pending)
    assert pending.content["msgtype"] == "m.notice"
    rid = re.search(r"as `([a-z0-9]{8})`", pending.body)
    assert rid is not None, pending.body
    request = await boss.notice(devops, f"Approval needed: {rid[1]}")
    assert f"Approve: type `!ray approve {rid[1]}`" in request.body
    assert f"<code>!ray approve {rid[1]}</code>" in request.content["formatted_body"]
    assert request.content["format"] == "org.matrix.custom.html"
    assert parts.backend.list() == []

    # 2. The approver types it; the requester hears in the thread where they asked, by mention.
    approval = await boss.say(devops, f"!ray approve {rid[1]}")
    approved = await boss.notice(devops, f"Approved `{rid[1]}`")
    assert _replying_to(approval)(approved)
    told = await alice.notice(team, "was approved by")
    assert told.body.startswith(f"{alice.id}: Your request `create big workers=6`")
    assert told.content["m.mentions"] == {"user_ids": [alice.id]}
    assert _replying_to(asked)(told)
    ref = ClusterRef(NAMESPACE, "big")
    assert parts.backend.get(ref).requester == f"matrix:{alice.id}"

    # 3. The controller says it is ready: a notification in a direct room the bot opens.
    parts.backend.make_ready(ref)
    parts.events.publish(Event(EventType.CLUSTER_READY, "head and workers up", parts.bot.clock(), ref))
    ready = await alice.notice(None, "big is ready.")
    assert ready.room_id not in (team, devops) and ready.room_id in alice.joined
    direct = ready.room_id
    await alice.say(direct, "list")  # in the direct room the prefix is optional
    assert "big" in (await alice.notice(direct, "1 clusters")).body

    # 4. Status with the chart of workers vs demand as an m.image.
    parts.scaled("big", [(45, 1, 1, 0), (30, 1, 6, 4), (5, 6, 6, 0)])
    status_asked = await alice.say(team, "!ray status big")
    status = await alice.notice(team, "Ray cluster big", timeout=60)  # may import matplotlib first
    assert _replying_to(status_asked)(status)
    image = await alice.wait_for(lambda s: isinstance(s.event, RoomMessageImage) and s.room_id == team)
    assert image.content["info"]["mimetype"] == "image/png"
    assert image.content["info"]["w"] == 600 and image.content["info"]["h"] == 250
    assert _replying_to(status_asked)(image)
    png = await alice.client.download(mxc=image.content["url"])
    assert isinstance(png, DownloadResponse), png
    assert png.body.startswith(PNG_MAGIC) and len(png.body) == image.content["info"]["size"]

    # 5. Delete needs the same person's confirmation.
    await alice.say(team, "!ray delete big")
    question = await alice.notice(team, "Confirm within")
    cid = re.search(r"type `!ray (confirm [a-z0-9]+)`", question.body)
    assert cid is not None, question.body
    await alice.say(team, f"!ray {cid[1]}")
    await alice.notice(team, "Deleted big")
    assert parts.backend.list() == []


async def test_history_own_messages_notices_and_strangers_invites_are_not_commands(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rayops.bot.matrix")
    alice, boss, mallory = world.person("alice"), world.person("boss"), world.person("mallory")
    bot_id = world.bot_user.user_id
    room = await alice.create_room("team", invite=[bot_id])
    parts = make_bot(world.tmp, _access(alice, boss, "!none:test.local"))
    first = await world.start(parts, invite_allow=(alice.id,))
    await alice.start()
    await alice.say(room, "!ray whoami")
    await alice.notice(room, "You are ")
    await world.stop(first)

    said_while_down = await alice.say(room, "!ray list")  # before the next start: history
    outsider_room = await mallory.create_room("lure", invite=[bot_id])
    await world.start(parts, invite_allow=(alice.id,))
    await alice.say(room, "!ray whoami", msgtype="m.notice")  # a notice: bots never answer those
    asked = await alice.say(room, "!ray whoami")
    answer = await alice.notice(room, "You are ")
    assert _replying_to(asked)(answer)
    root = await alice.say(room, "about the demo cluster")  # not a command: no answer
    thread = {
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": root},
    }
    in_thread = await alice.say(room, "!ray list", **{"m.relates_to": thread})
    listed = await alice.notice(room, "No clusters")
    assert listed.content["m.relates_to"]["rel_type"] == "m.thread"
    assert listed.content["m.relates_to"]["event_id"] == root
    assert _replying_to(in_thread)(listed)
    for adapter, _ in world.running:
        assert await adapter.flush(10)
    await alice._sync()
    assert [s.body for s in alice.seen] == []  # nothing for the history or the notice
    assert not any(_replying_to(said_while_down)(s) for s in alice.seen)

    status, members = world.synapse.request(
        "GET", f"/_matrix/client/v3/rooms/{outsider_room}/members", token=mallory.user.access_token
    )
    assert status == 200, members
    bot_membership = [m["content"]["membership"] for m in members["chunk"] if m["state_key"] == bot_id]
    assert bot_membership == ["leave"]  # the invite was declined
    assert any("declining the invite of " + mallory.id in r.getMessage() for r in caplog.records)


async def test_sync_backs_off_while_the_homeserver_is_unreachable_and_catches_up(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rayops.bot.matrix")
    alice, boss = world.person("alice"), world.person("boss")
    room = await alice.create_room("team", invite=[world.bot_user.user_id])
    parts = make_bot(world.tmp, _access(alice, boss, "!none:test.local"))
    proxy = TcpProxy(world.synapse.port)
    await proxy.restore()
    adapter = await world.start(
        parts, homeserver=proxy.url, backoff_initial_s=0.2, backoff_max_s=0.8, request_timeout_s=5.0
    )
    adapter.rng = lambda: 1.0  # no jitter: delays are exactly 0.2, 0.4, 0.8, 0.8 s
    await alice.start()

    await proxy.cut()
    await _until(lambda: adapter.sync_failures >= 3, "three failed syncs")
    assert not adapter.readiness().ready
    asked = await alice.say(room, "!ray whoami")  # said while the bot cannot hear
    await proxy.restore()
    await _until(lambda: adapter.readiness().ready, "the adapter to be ready again")

    answer = await alice.notice(room, "You are ")
    assert _replying_to(asked)(answer)
    delays = [
        float(m[1]) for r in caplog.records if (m := re.search(r"retrying in ([0-9.]+) s", r.getMessage()))
    ]
    assert delays[:3] == [0.2, 0.4, 0.8]
    assert all(d <= 0.8 for d in delays)
    assert any("Matrix sync works again after" in r.getMessage() for r in caplog.records)
    await proxy.cut()


async def test_m_limit_exceeded_is_waited_out_and_every_notification_arrives_in_order(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    alice, boss = world.person("alice"), world.person("boss")
    admin = world.synapse.register_user(f"admin{world.suffix}", "pw-admin", admin=True)
    devops = await boss.create_room("devops", invite=[world.bot_user.user_id])
    parts = make_bot(world.tmp, _access(alice, boss, devops))
    adapter = await world.start(parts)
    await boss.start()
    _limit(world.synapse, admin, world.bot_user.user_id, per_second=1, burst=1)

    started = time.monotonic()
    for n in range(3):
        dest = Destination.channel(Platform.MATRIX, devops)
        await adapter.post_notification(Notification(dest, Reply(f"alert number {n}"), key=f"k{n}"))
    assert await adapter.flush(30)
    elapsed = time.monotonic() - started

    got = [(await boss.notice(devops, f"alert number {n}")).body for n in range(3)]
    assert got == [f"alert number {n}" for n in range(3)]
    assert elapsed >= 1.0  # at least one Retry-After was waited out
    assert any("Got 429 response (ratelimited)" in r.getMessage() for r in caplog.records)


def _limit(synapse: SynapseServer, admin: MatrixUser, user_id: str, per_second: int, burst: int) -> None:
    status, body = synapse.request(
        "POST",
        f"/_synapse/admin/v1/users/{user_id}/override_ratelimit",
        {"messages_per_second": per_second, "burst_count": burst},
        token=admin.access_token,
    )
    assert status == 200, body


async def _until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_refused_access_token_stops_the_start_with_a_clear_error(world: World) -> None:
    parts = make_bot(world.tmp, ACCESS.format(alice="@a:test.local", boss="@b:test.local", devops="!d:x"))
    adapter = MatrixAdapter(
        MatrixSettings(world.synapse.url, world.bot_user.user_id, access_token="syt_not_a_token_at_all_0000")
    )
    with pytest.raises(SettingsError, match=r"refused MATRIX_ACCESS_TOKEN \(M_UNKNOWN_TOKEN\)"):
        await serve(parts.bot, adapter, parts.events)
    assert not adapter.readiness().ready
