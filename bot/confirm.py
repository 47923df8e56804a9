"""Confirmations for destructive commands (`delete`, `release`, `scale NAME 0`).

The first run of a destructive command changes nothing: it is remembered here under a short id
and the person gets Confirm/Cancel buttons (or types `confirm`). Only the same person can confirm,
within `ttl`; confirming runs the command again through the whole pipeline (authorization
included, so a right lost meanwhile still refuses). A used id is remembered for a while, so a
button pressed twice says "already confirmed" instead of acting twice.

Kept in memory on purpose: a confirmation lives minutes, and a restart that forgets one only
means asking again, which is the safe direction.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.approvals import new_id

_TOMBSTONE_TTL = timedelta(hours=1)
_MAX_PENDING_PER_USER = 20
_INFINITIVE = {"confirmed": "confirm", "cancelled": "cancel"}


@dataclass(frozen=True)
class PendingConfirmation:
    id: str
    user: str  # identity key of the person who asked
    command: str  # canonical command text
    created_at: datetime
    expires_at: datetime
    channel_id: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a confirm/cancel did nothing, as a sentence for the person."""

    message: str
    wrong_person: bool = False


class ConfirmationStore:
    def __init__(self, ttl: timedelta = timedelta(minutes=5)) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._pending: dict[str, PendingConfirmation] = {}
        self._done: dict[str, tuple[str, datetime]] = {}  # id -> (what happened, when)

    def ask(
        self, user: str, command: str, now: datetime, channel_id: str | None = None
    ) -> PendingConfirmation:
        with self._lock:
            self._prune(now)
            for p in self._pending.values():  # asking twice gives the same id, not a second one
                if p.user == user and p.command == command:
                    return p
            mine = sorted((p for p in self._pending.values() if p.user == user), key=lambda p: p.created_at)
            for old in mine[: max(0, len(mine) - _MAX_PENDING_PER_USER + 1)]:
                self._finish(old.id, "replaced by newer requests", now)
            cid = new_id()
            while cid in self._pending or cid in self._done:
                cid = new_id()
            p = PendingConfirmation(cid, user, command, now, now + self.ttl, channel_id)
            self._pending[cid] = p
            return p

    def take(self, user: str, cid: str | None, now: datetime) -> PendingConfirmation | Refusal:
        """The confirmation to carry out now (removed from the store), or why there is none."""
        return self._resolve(user, cid, now, "confirmed")

    def cancel(self, user: str, cid: str | None, now: datetime) -> PendingConfirmation | Refusal:
        return self._resolve(user, cid, now, "cancelled")

    def _resolve(self, user: str, cid: str | None, now: datetime, verb: str) -> PendingConfirmation | Refusal:
        with self._lock:
            if cid is None:
                mine = [p for p in self._pending.values() if p.user == user and p.expires_at > now]
                if not mine:
                    self._prune(now)
                    return Refusal("nothing of yours is waiting for confirmation")
                p = max(mine, key=lambda p: p.created_at)
            else:
                found = self._pending.get(cid)
                if found is None:
                    done = self._done.get(cid)
                    if done is not None:
                        what, when = done
                        return Refusal(
                            f"`{cid}` was already {what} at {when:%H:%M:%S} UTC; nothing more to do"
                        )
                    return Refusal(f"no command is waiting for confirmation as `{cid}`")
                p = found
                if p.user != user:
                    return Refusal(f"only {p.user}, who asked, can {_INFINITIVE[verb]} `{p.command}`", True)
            if p.expires_at <= now:
                self._finish(p.id, "expired", now)
                return Refusal(
                    f"the confirmation for `{p.command}` expired at {p.expires_at:%H:%M:%S} UTC; "
                    "run the command again"
                )
            self._finish(p.id, verb, now)
            return p

    def _finish(self, cid: str, what: str, now: datetime) -> None:
        self._pending.pop(cid, None)
        self._done[cid] = (what, now)

    def _prune(self, now: datetime) -> None:
        for cid in [c for c, p in self._pending.items() if p.expires_at <= now]:
            self._finish(cid, "expired", now)
        for cid in [c for c, (_, at) in self._done.items() if now - at > _TOMBSTONE_TTL]:
            del self._done[cid]
