"""People in the Matrix tests: a matrix-nio client per registered user that sends `m.text`, joins
what it is invited to, and waits for the bot's answers (notices and images) by syncing, as a chat
client would. And a TCP proxy the bot can be pointed through, to cut and restore its link to the
homeserver."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinResponse,
    RoomCreateResponse,
    RoomMessageImage,
    RoomMessageNotice,
    RoomSendResponse,
    SyncResponse,
)

from tests.harness.synapse import MatrixUser, SynapseServer


@dataclass
class Seen:
    room_id: str
    event: Any

    @property
    def body(self) -> str:
        return str(getattr(self.event, "body", ""))

    @property
    def content(self) -> dict[str, Any]:
        return dict(self.event.source.get("content") or {})


@dataclass
class Person:
    user: MatrixUser
    client: AsyncClient
    seen: list[Seen] = field(default_factory=list)
    joined: set[str] = field(default_factory=set)

    @staticmethod
    def of(synapse: SynapseServer, user: MatrixUser) -> Person:
        client = AsyncClient(synapse.url, user.user_id)
        client.restore_login(user.user_id, user.device_id, user.access_token)
        return Person(user, client)

    @property
    def id(self) -> str:
        return self.user.user_id

    async def start(self) -> None:
        """Sync once so later waits see only what is new."""
        resp = await self.client.sync(timeout=0, full_state=True)
        assert isinstance(resp, SyncResponse), resp

    async def create_room(self, name: str, invite: list[str]) -> str:
        resp = await self.client.room_create(name=name, invite=invite)
        assert isinstance(resp, RoomCreateResponse), resp
        return resp.room_id

    async def say(self, room_id: str, text: str, **content: Any) -> str:
        resp = await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": text, **content}
        )
        assert isinstance(resp, RoomSendResponse), resp
        return resp.event_id

    async def _sync(self) -> None:
        resp = await self.client.sync(timeout=500, since=self.client.next_batch)
        assert isinstance(resp, SyncResponse), resp
        for room_id, info in resp.rooms.invite.items():
            if any(isinstance(e, InviteMemberEvent) for e in info.invite_state):
                joined = await self.client.join(room_id)  # a direct room the bot opened
                assert isinstance(joined, JoinResponse), joined
                self.joined.add(room_id)
        for room_id, info in resp.rooms.join.items():
            for event in info.timeline.events:
                if isinstance(event, RoomMessageNotice | RoomMessageImage) and event.sender != self.id:
                    self.seen.append(Seen(room_id, event))

    async def wait_for(
        self, match: Callable[[Seen], bool], timeout: float = 20.0, what: str = "a message"
    ) -> Seen:
        """The first notice or image from someone else (seen since the last wait) that matches; it
        is consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for i, s in enumerate(self.seen):
                if match(s):
                    return self.seen.pop(i)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.id} timed out waiting for {what}; saw {[s.body for s in self.seen]}"
                )
            await self._sync()

    async def notice(self, room_id: str | None, contains: str, timeout: float = 20.0) -> Seen:
        return await self.wait_for(
            lambda s: (
                isinstance(s.event, RoomMessageNotice)
                and (room_id is None or s.room_id == room_id)
                and contains in s.body
            ),
            timeout,
            f"a notice containing {contains!r}",
        )

    async def close(self) -> None:
        await self.client.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target port; `cut()` closes every link and stops listening,
    `restore()` listens on the same port again (what a homeserver restart looks like to a client)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stop accepting first, then drop the open links
        for w in list(self._links):
            w.close()
        self._links.clear()
        if server is not None:
            await server.wait_closed()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._links.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._links.difference_update((writer, up_writer))
