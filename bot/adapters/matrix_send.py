"""Sending to Matrix rooms for the adapter: notices and charts in order per room, the DevOps
room by id or alias, and each person's direct room with the bot (`m.direct`).

Kept apart from the sync loop (`bot.adapters.matrix`) because it is the half that talks to rooms
rather than listens: it knows nothing of commands, only of `Reply`s and where they go. Every
failure is logged here and never raised, so one unreachable room never stops the adapter.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp
from nio import (
    AsyncClient,
    DirectRoomsResponse,
    MatrixRoom,
    RoomCreateError,
    RoomPreset,
    RoomResolveAliasResponse,
    RoomSendResponse,
    UploadResponse,
)

from bot.adapters.base import Reply
from bot.adapters.matrix_convert import image_content, notice_content
from bot.adapters.matrix_settings import MatrixSettings

log = logging.getLogger("rayops.bot.matrix")

NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


class MatrixSender:
    def __init__(self, client: AsyncClient, settings: MatrixSettings) -> None:
        self.client = client
        self.settings = settings
        self.direct: dict[str, str] = {}  # user id -> their direct room with the bot
        self._m_direct: dict[str, list[str]] = {}  # the bot's m.direct account data
        self._aliases: dict[str, str] = {}
        self._send_locks: dict[str, asyncio.Lock] = {}

    async def send(
        self,
        room_id: str,
        reply: Reply,
        reply_to: str | None = None,
        thread_root: str | None = None,
        mention: str | None = None,
    ) -> None:
        room = self.client.rooms.get(room_id)
        if room is not None and room.encrypted and not self.settings.encryption:
            log.error(
                "not posting into %s: the room is encrypted and E2EE is off (%s)", room_id, first_line(reply)
            )
            return
        content = notice_content(reply, reply_to=reply_to, thread_root=thread_root, mention=mention)
        lock = self._send_locks.setdefault(room_id, asyncio.Lock())
        async with lock:  # one room's messages stay in order (an image after its text)
            if not await self._room_send(room_id, content, first_line(reply)) or reply.image is None:
                return
            image = reply.image
            try:
                up, _ = await self.client.upload(
                    lambda _limited, _timeouts: _bytes_reader(image.data),
                    content_type="image/png",
                    filename=image.name,
                    filesize=len(image.data),
                )
            except NETWORK_ERRORS as e:
                log.error("chart %s not uploaded to the media repository (%s)", image.name, type(e).__name__)
                return
            if not isinstance(up, UploadResponse):
                log.error(
                    "chart %s not uploaded to the media repository: %s",
                    image.name,
                    getattr(up, "message", up),
                )
                return
            await self._room_send(
                room_id,
                image_content(image.name, up.content_uri, image.data, image.alt, reply_to, thread_root),
                f"chart {image.name}",
            )

    async def _room_send(self, room_id: str, content: dict[str, Any], what: str) -> bool:
        try:
            resp = await self.client.room_send(
                room_id, "m.room.message", content, ignore_unverified_devices=True
            )
        except NETWORK_ERRORS as e:
            log.error("Matrix message to %s not sent (%s): %s", room_id, type(e).__name__, what)
            return False
        if isinstance(resp, RoomSendResponse):
            return True
        log.error(
            "Matrix message to %s not sent (%s %s): %s",
            room_id,
            getattr(resp, "status_code", ""),
            getattr(resp, "message", resp),
            what,
        )
        return False

    async def room_id(self, room: str) -> str | None:
        if not room.startswith("#"):
            return room
        if room not in self._aliases:
            resp = await self.client.room_resolve_alias(room)
            if not isinstance(resp, RoomResolveAliasResponse):
                log.error("cannot resolve the room alias %s: %s", room, getattr(resp, "message", resp))
                return None
            self._aliases[room] = resp.room_id
        return self._aliases[room]

    def is_direct(self, user_id: str, room_id: str) -> bool:
        return room_id in self._m_direct.get(user_id, ()) or self.direct.get(user_id) == room_id

    async def load_direct_rooms(self) -> None:
        resp = await self.client.list_direct_rooms()
        if isinstance(resp, DirectRoomsResponse):
            self._m_direct = {str(u): [str(r) for r in rooms] for u, rooms in resp.rooms.items()}

    async def direct_room(self, user_id: str) -> str | None:
        """The bot's direct room with this person: known (`m.direct` account data, or a direct
        invite), else created with them invited (`trusted_private_chat` lets them read what was
        sent before they join) and recorded in `m.direct`, so a restart finds it again."""
        if user_id in self.direct:
            return self.direct[user_id]
        for room_id in reversed(self._m_direct.get(user_id, [])):
            room = self.client.rooms.get(room_id)
            if room is not None and user_id in _members(room) and not room.encrypted:
                self.direct[user_id] = room_id
                return room_id
        resp = await self.client.room_create(
            is_direct=True, invite=[user_id], preset=RoomPreset.trusted_private_chat, name="rayops"
        )
        if isinstance(resp, RoomCreateError):
            log.error("cannot open a direct room with %s: %s", user_id, resp.message)
            return None
        self.direct[user_id] = resp.room_id
        log.info("opened a direct room %s with %s", resp.room_id, user_id)
        await self.remember_direct(user_id, resp.room_id)
        return resp.room_id

    async def remember_direct(self, user_id: str, room_id: str) -> None:
        """Add the room to the bot's `m.direct` account data (nio has no call for writing it)."""
        rooms = self._m_direct.setdefault(user_id, [])
        if room_id in rooms:
            return
        rooms.append(room_id)
        path = f"/_matrix/client/v3/user/{quote(self.client.user_id)}/account_data/m.direct"
        headers = {"Authorization": f"Bearer {self.client.access_token}", "Content-Type": "application/json"}
        try:
            resp = await self.client.send("PUT", path, json.dumps(self._m_direct), headers)
            ok = resp.status == 200
            resp.release()
        except NETWORK_ERRORS as e:
            ok = False
            log.debug("m.direct update failed: %s", type(e).__name__)
        if not ok:
            log.warning("could not record %s as the direct room with %s (m.direct)", room_id, user_id)


def _members(room: MatrixRoom) -> set[str]:
    return set(room.users) | set(room.invited_users)


def first_line(reply: Reply) -> str:
    line = (reply.title or reply.text or "").splitlines()
    return (line[0] if line else "")[:80]


def _bytes_reader(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)
