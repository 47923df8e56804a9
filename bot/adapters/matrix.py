"""The Matrix adapter on matrix-nio: a sync loop with reconnect and backoff, `!ray` commands and
mentions in, `m.notice` replies and `m.image` charts out.

Sync: one initial sync (`full_state`) whose timeline is skipped, so nothing said before the bot
started is run; then long-poll syncs from its token. A failed sync (homeserver down, network, 5xx,
a rejected token) makes the adapter not ready and waits an exponentially growing, jittered delay
(`backoff_initial_s` doubling up to `backoff_max_s`, times 0.5 to 1) before the next try; the first
success makes it ready again and is logged. nio itself waits out `M_LIMIT_EXCEEDED` answers for
`retry_after_ms` (at most `max_limit_exceeded` times per request); what still fails is logged.

Rooms: invites from `allowed_inviters` are joined, others declined. In a room joined while
running, only messages after the bot's own join event count. Own messages and notices are never commands.
Unencrypted rooms by default: with E2EE off the adapter refuses to post into an encrypted room
(nio would send clear text there) and says so in the log; E2EE (`MATRIX_E2EE`, needs
`matrix-nio[e2e]` and a store path) is optional.

Answers go back as a reply to the command event (inside its thread when it was in one).
Notifications: DevOps room by id or alias; a person's notification about their request into the
room where they asked (mentioning them), else their direct room with the bot (from `m.direct`, or
created on first use and added to it). In a direct room the `!ray` prefix is optional.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinError,
    MegolmEvent,
    RoomMemberEvent,
    RoomMessageText,
    SyncResponse,
    WhoamiResponse,
)
from nio.crypto import ENCRYPTION_ENABLED

from bot.adapters.base import (
    CommandCallback,
    DestinationKind,
    IncomingCommand,
    Notification,
    Platform,
    Reply,
    ReplyStatus,
)
from bot.adapters.matrix_convert import (
    command_text,
    decode_thread,
    encode_thread,
)
from bot.adapters.matrix_send import NETWORK_ERRORS, MatrixSender, first_line
from bot.adapters.matrix_settings import MatrixSettings
from bot.adapters.runtime import Readiness, SettingsError
from bot.redact import DEFAULT as REDACTOR

log = logging.getLogger("rayops.bot.matrix")

STOP_GRACE_S = 20.0
# The initial sync's timeline is skipped anyway: ask for one event per room, not the default ten.
INITIAL_FILTER: dict[str, Any] = {"room": {"timeline": {"limit": 1}}}


class MatrixAdapter:
    """`ChatAdapter` for Matrix; see the module docstring."""

    platform = Platform.MATRIX

    def __init__(self, settings: MatrixSettings, *, rng: Callable[[], float] = random.random) -> None:
        if settings.encryption and not ENCRYPTION_ENABLED:
            raise SettingsError("MATRIX_E2EE=true needs the end-to-end extra: pip install 'matrix-nio[e2e]'")
        self.settings = settings
        self.rng = rng
        self.client = AsyncClient(
            settings.homeserver,
            settings.user_id,
            device_id=settings.device_id or "",
            store_path=settings.store_path or "",
            config=AsyncClientConfig(
                encryption_enabled=settings.encryption,
                store_sync_tokens=settings.encryption,
                max_limit_exceeded=settings.max_limit_exceeded,
                max_timeouts=1,  # network failures surface to the sync loop, which backs off
                request_timeout=settings.request_timeout_s,
            ),
        )
        self.display_name: str | None = None
        self.sync_failures = 0  # consecutive failed syncs (0 when healthy)
        self._on_command: CommandCallback | None = None
        self._since: str | None = None
        self._known_rooms: set[str] = set()  # rooms whose history is behind us
        self._invites: dict[str, tuple[str, bool]] = {}  # room -> (inviter, direct), not yet answered
        self.sender = MatrixSender(self.client, settings)
        self._warned_encrypted: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopping = False
        self._syncing = False
        self._sync_exited = asyncio.Event()
        self._last_error = "starting"

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, on_command: CommandCallback) -> None:
        """Log in, skip history with one initial sync, then sync until `stop()`."""
        self._on_command = on_command
        self._syncing = True
        try:
            await self._login()
            while not self._stop_requested.is_set():  # the initial sync, with the same backoff
                # Synapse answers a repeated identical /sync from its response cache for two
                # minutes: a bot restarted within that time would get its predecessor's initial
                # sync (old token, old invites) and then replay the history since. The timeout is
                # part of the cache key and means nothing to an initial sync (answered at once),
                # so a fresh value per start makes the request new.
                timeout_ms = random.randint(1, 9_999)
                first = await self._sync_once(timeout_ms, full_state=True, sync_filter=INITIAL_FILTER)
                if first is not None:  # its timeline (history) is not looked at
                    self._known_rooms.update(first.rooms.join)
                    self._since = first.next_batch
                    await self._join_invites(first)
                    self._mark_ok()
                    break
            await self._sync_loop()
        finally:
            self._sync_exited.set()
            await self.stop()

    async def _login(self) -> None:
        """Log in (or check the token), retrying while the homeserver cannot be reached; a
        refused token or password is fatal (SettingsError): it will not fix itself."""
        while True:
            try:
                await self._login_once()
                return
            except NETWORK_ERRORS as e:
                if not await self._back_off(f"{type(e).__name__}: {e}".rstrip(": "), "log-in"):
                    return

    async def _login_once(self) -> None:
        s = self.settings
        if s.access_token:
            self.client.restore_login(s.user_id, s.device_id or "", s.access_token)
            who = await self.client.whoami()
            if not isinstance(who, WhoamiResponse):
                code = getattr(who, "status_code", "")
                if code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN", "M_FORBIDDEN"):
                    raise SettingsError(f"the homeserver refused MATRIX_ACCESS_TOKEN ({code})")
                raise aiohttp.ClientError(f"whoami: {code} {getattr(who, 'message', who)}")
            if who.user_id != s.user_id:
                raise SettingsError(f"MATRIX_ACCESS_TOKEN belongs to {who.user_id}, not {s.user_id}")
            if not s.device_id and who.device_id:
                self.client.device_id = who.device_id
        else:
            resp = await self.client.login(s.password, device_name=s.device_name)
            if not self.client.access_token:
                raise SettingsError(f"Matrix login as {s.user_id} failed: {getattr(resp, 'message', resp)}")
            REDACTOR.add_secrets([self.client.access_token])
        name = await self.client.get_displayname()
        self.display_name = getattr(name, "displayname", None)
        await self.sender.load_direct_rooms()

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    def readiness(self) -> Readiness:
        if self._stopping:
            return Readiness(False, "stopping")
        if self._ready.is_set():
            return Readiness(True, "matrix sync ok")
        return Readiness(False, f"matrix sync not ok: {self._last_error}")

    async def stop(self) -> None:
        """Stop syncing, let commands in flight answer (up to STOP_GRACE_S), close the session.
        Idempotent; concurrent callers all wait for it."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._stop_requested.set()
        self._ready.clear()
        try:
            if self._syncing:  # its sync is interrupted at once; the session must outlive it
                await self._sync_exited.wait()
            if self._tasks:
                _, late = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_S)
                for task in late:
                    log.error("a Matrix command or notification was still running at shutdown; cancelled")
                    task.cancel()
            await self.client.close()
        finally:
            self._stopped.set()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every command answer and notification in flight was sent (tests)."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    # --- syncing ------------------------------------------------------------------------------

    def _mark_ok(self) -> None:
        if self.sync_failures:
            log.info("Matrix sync works again after %d failed attempt(s)", self.sync_failures)
        self.sync_failures = 0
        self._last_error = ""
        self._ready.set()

    def backoff_s(self, failures: int) -> float:
        s = self.settings
        base = min(s.backoff_max_s, s.backoff_initial_s * 2 ** max(0, failures - 1))
        return base * (0.5 + self.rng() / 2)

    async def _sync_once(
        self, timeout_ms: int, full_state: bool = False, sync_filter: dict[str, Any] | None = None
    ) -> SyncResponse | None:
        """One sync, interruptible by stop(); None after a failure (already backed off) or stop."""
        sync = asyncio.ensure_future(
            self.client.sync(
                timeout=timeout_ms, since=self._since, full_state=full_state, sync_filter=sync_filter
            )
        )
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({sync, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not sync.done() or self._stop_requested.is_set():
            sync.cancel()
            await asyncio.gather(sync, return_exceptions=True)
            return None
        try:
            resp = sync.result()
        except NETWORK_ERRORS as e:
            why = f"{type(e).__name__}: {e}".rstrip(": ")
        else:
            if isinstance(resp, SyncResponse):
                return resp
            why = f"{getattr(resp, 'status_code', '')} {getattr(resp, 'message', resp)}".strip()
        await self._back_off(why, "sync")
        return None

    async def _back_off(self, why: str, what: str) -> bool:
        """Count a failure, say so, wait the backoff; False when stop() was asked meanwhile."""
        self.sync_failures += 1
        self._last_error = why
        self._ready.clear()
        delay = self.backoff_s(self.sync_failures)
        log.warning(
            "Matrix %s failed (%s); retrying in %.1f s (attempt %d)", what, why, delay, self.sync_failures
        )
        try:
            await asyncio.wait_for(self._stop_requested.wait(), delay)
        except TimeoutError:
            return True
        return False

    async def _sync_loop(self) -> None:
        timeout_ms = int(self.settings.sync_timeout_s * 1000)
        while not self._stop_requested.is_set():
            resp = await self._sync_once(timeout_ms)
            if resp is None:
                continue
            self._since = resp.next_batch
            self._mark_ok()
            if self.settings.encryption:
                await self._keys_upkeep()
            await self._join_invites(resp)
            self._take_messages(resp)

    async def _keys_upkeep(self) -> None:  # pragma: no cover - needs matrix-nio[e2e]
        c = self.client
        try:
            if c.should_upload_keys:
                await c.keys_upload()
            if c.should_query_keys:
                await c.keys_query()
            if c.should_claim_keys:
                await c.keys_claim(c.get_users_for_key_claiming())
            await c.send_to_device_messages()
        except NETWORK_ERRORS as e:
            log.warning("Matrix key upkeep failed (%s); trying again after the next sync", type(e).__name__)

    async def _join_invites(self, resp: SyncResponse) -> None:
        """Join (or decline) the invites of this sync, and retry those a network error left
        unanswered: an incremental sync shows an invite only once."""
        for room_id, info in resp.rooms.invite.items():
            mine = [
                e
                for e in info.invite_state
                if isinstance(e, InviteMemberEvent) and e.state_key == self.client.user_id
            ]
            inviter = mine[-1].sender if mine else ""
            self._invites[room_id] = (inviter, bool(mine and mine[-1].content.get("is_direct")))
        for room_id, (inviter, direct) in list(self._invites.items()):
            try:
                if not any(fnmatch.fnmatchcase(inviter, p) for p in self.settings.allowed_inviters):
                    log.info(
                        "declining the invite of %s to %s (not in MATRIX_INVITE_ALLOW)", inviter, room_id
                    )
                    await self.client.room_leave(room_id)
                    del self._invites[room_id]
                    continue
                joined = await self.client.join(room_id)
            except NETWORK_ERRORS as e:
                log.warning("could not answer the invite to %s (%s); trying again", room_id, type(e).__name__)
                continue
            del self._invites[room_id]
            if isinstance(joined, JoinError):
                log.warning("could not join %s (invited by %s): %s", room_id, inviter, joined.message)
                continue
            if direct:
                self.sender.direct.setdefault(inviter, room_id)
                await self.sender.remember_direct(inviter, room_id)
            log.info("joined %s (invited by %s)", room_id, inviter)

    def _take_messages(self, resp: SyncResponse) -> None:
        for room_id, info in resp.rooms.join.items():
            events = list(info.timeline.events)
            if room_id not in self._known_rooms:
                # First sight of a room joined while running: its timeline starts with history.
                # Only what follows the bot's own join counts (no clocks compared).
                self._known_rooms.add(room_id)
                joins = [i for i, e in enumerate(events) if _is_own_join(e, self.client.user_id)]
                events = events[joins[-1] + 1 :] if joins else []
            room = self.client.rooms.get(room_id)
            for event in events:
                if isinstance(event, MegolmEvent) and room_id not in self._warned_encrypted:
                    self._warned_encrypted.add(room_id)
                    log.warning("%s is encrypted and E2EE is off: its messages cannot be read", room_id)
                if not isinstance(event, RoomMessageText) or event.sender == self.client.user_id:
                    continue  # notices (other bots), images, state, our own: never commands
                direct = self.sender.is_direct(event.sender, room_id)
                text = command_text(
                    event.body, user_id=self.client.user_id, display_name=self.display_name, direct=direct
                )
                if text is None:
                    continue
                display = (room.user_name(event.sender) or "") if room is not None else ""
                command = IncomingCommand(
                    Platform.MATRIX,
                    event.sender,
                    text,
                    user_display=display,
                    channel_id=room_id,
                    thread_id=encode_thread(event.event_id, _thread_root(event.source)),
                )
                self._spawn(self._serve(command))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- answering ----------------------------------------------------------------------------

    async def _serve(self, command: IncomingCommand) -> None:
        assert self._on_command is not None
        try:
            reply = await self._on_command(command)
        except Exception:  # Bot.handle never raises; a callback that does still gets an answer
            log.exception("the command callback failed for a Matrix message in %s", command.channel_id)
            reply = Reply("Something went wrong on my side; try again in a minute.", ReplyStatus.ERROR)
        await self.send_reply(command, reply)

    async def send_reply(self, command: IncomingCommand, reply: Reply) -> None:
        if command.channel_id is None:
            log.error("a Matrix command from %s has no room to answer in", command.user_id)
            return
        event_id, root = decode_thread(command.thread_id)
        await self.sender.send(command.channel_id, reply, event_id, root)

    async def post_notification(self, notification: Notification) -> None:
        """Send in the background and return (so a slow room never delays the bot's answer);
        failures are logged by `_send`."""
        to = notification.to
        if to.platform is not Platform.MATRIX:
            log.warning("not a Matrix destination (%s); notification dropped", to.platform)
            return
        self._spawn(self._notify(notification))

    async def _notify(self, n: Notification) -> None:
        to = n.to
        try:
            if to.kind is DestinationKind.USER and n.thread_channel and n.thread_id:
                event_id, root = decode_thread(n.thread_id)
                await self.sender.send(n.thread_channel, n.reply, event_id, root, mention=to.id)
            elif to.kind is DestinationKind.USER:
                room = await self.sender.direct_room(to.id)
                if room is not None:
                    await self.sender.send(room, n.reply)
            else:
                room = await self.sender.room_id(to.id)
                if room is not None:
                    await self.sender.send(room, n.reply)
        except NETWORK_ERRORS as e:
            log.error(
                "Matrix notification to %s not delivered (%s): %s",
                to.id,
                type(e).__name__,
                first_line(n.reply),
            )


def _thread_root(source: dict[str, Any]) -> str | None:
    rel = (source.get("content") or {}).get("m.relates_to") or {}
    return str(rel["event_id"]) if rel.get("rel_type") == "m.thread" and rel.get("event_id") else None


def _is_own_join(event: Any, user_id: str) -> bool:
    return (
        isinstance(event, RoomMemberEvent)
        and event.state_key == user_id
        and event.membership == "join"
        and (event.prev_membership or "") != "join"
    )
