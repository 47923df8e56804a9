"""Outgoing Slack messages: one ordered queue per channel that honours HTTP 429 `Retry-After`.

Why a queue per channel: Slack allows `chat.postMessage` about one message per second per channel
(short bursts tolerated) and answers 429 with `Retry-After: <seconds>` past that. An alert storm in
the DevOps channel must neither lose messages nor delay a requester's direct message, so each
channel (a channel id, or a user id for a direct message) has its own worker: it posts in order,
waits at least `min_interval_s` between two posts to the same channel, and on 429 sleeps exactly
what Slack asked before trying the same message again.

Coalescing: while a message waits (behind a 429, or the per-channel pacing), a newer message with
the same non-empty `key` (a `Notification.key` such as `alert:metrics:ns/c`), the same thread and
the same recipient replaces it in place; the one finally posted says how many it replaced. Nothing
is dropped silently: every retry is logged at WARNING, every message given up (a permanent Slack
error, attempts exhausted, shutdown) at ERROR with its channel, key and first line.

The queue lives on the bot's event loop; the blocking `slack_sdk` calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.adapters.base import Image

log = logging.getLogger("rayops.bot.slack.queue")

# Slack errors worth trying again (the rest are permanent: wrong channel, no rights, bad token...).
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to post. `ephemeral_user` posts it with `chat.postEphemeral` to that person
    only; `image` is uploaded into the message's thread once the message is posted."""

    channel: str
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    ephemeral_user: str | None = None
    image: Image | None = None
    key: str = ""

    def coalesces_with(self, other: OutgoingMessage) -> bool:
        return bool(self.key) and (self.key, self.thread_ts, self.ephemeral_user) == (
            other.key,
            other.thread_ts,
            other.ephemeral_user,
        )

    @property
    def summary(self) -> str:
        first = (self.text.splitlines() or [""])[0]
        return first if len(first) <= 80 else first[:79] + "…"


@dataclass(frozen=True)
class Delivery:
    """What became of a message: posted (`ts` of the message; None for an ephemeral one), or not,
    with Slack's error (or the local one) and how many attempts it took."""

    ok: bool
    channel: str
    ts: str | None = None
    error: str | None = None
    attempts: int = 0
    replaced: int = 0
    image_error: str | None = None


@dataclass
class _Item:
    message: OutgoingMessage
    future: asyncio.Future[Delivery]
    replaced: int = 0


@dataclass
class _Channel:
    items: deque[_Item] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    last_post: float | None = None


class _Retry(Exception):
    def __init__(self, wait_s: float, why: str, rate_limited: bool) -> None:
        super().__init__(why)
        self.wait_s = wait_s
        self.why = why
        self.rate_limited = rate_limited


class _Permanent(Exception):
    pass


def retry_after_s(headers: Any, default: float = 1.0) -> float:
    """Seconds from a `Retry-After` header (any capitalisation), else `default`."""
    try:
        items = headers.items()
    except AttributeError:
        return default
    for name, value in items:
        if str(name).lower() == "retry-after":
            text = value[0] if isinstance(value, list | tuple) and value else value
            try:
                return max(0.0, float(str(text)))
            except ValueError:
                return default
    return default


class ChannelQueues:
    """Per-channel ordered senders over one `WebClient` (see the module docstring)."""

    def __init__(
        self,
        client: WebClient,
        *,
        min_interval_s: float = 1.0,
        max_attempts: int = 6,
        backoff_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.min_interval_s = min_interval_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.clock = clock
        self.sleep = sleep
        self._channels: dict[str, _Channel] = {}
        self._closing = False
        self.coalesced = 0  # messages replaced by a newer one with the same key (for tests/metrics)

    # --- submitting ---------------------------------------------------------------------------

    def submit(self, message: OutgoingMessage) -> asyncio.Future[Delivery]:
        """Queue `message` behind the others for its channel; call on the event loop. The future
        resolves when it was posted or given up (it never raises)."""
        loop = asyncio.get_running_loop()
        ch = self._channels.setdefault(message.channel, _Channel())
        if self._closing:
            fut: asyncio.Future[Delivery] = loop.create_future()
            log.error(
                "Slack queue is shut down: not posting to %s (key %r): %s",
                message.channel,
                message.key,
                message.summary,
            )
            fut.set_result(Delivery(False, message.channel, error="shutting down"))
            return fut
        for item in ch.items:  # only waiting items: the one being sent has left the deque
            if message.coalesces_with(item.message):
                item.message = message
                item.replaced += 1
                self.coalesced += 1
                log.info(
                    "coalesced a waiting Slack message to %s (key %r): the newer one replaces it "
                    "(%d replaced so far)",
                    message.channel,
                    message.key,
                    item.replaced,
                )
                return item.future
        item = _Item(message, loop.create_future())
        ch.items.append(item)
        if ch.worker is None or ch.worker.done():
            ch.worker = loop.create_task(
                self._work(message.channel, ch), name=f"slack-queue:{message.channel}"
            )
        return item.future

    def waiting(self, channel: str | None = None) -> int:
        """Messages not yet taken by a worker (one channel, or all)."""
        chans = [self._channels.get(channel)] if channel is not None else list(self._channels.values())
        return sum(len(c.items) for c in chans if c is not None)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued message was posted or given up; False on timeout."""
        workers = [c.worker for c in self._channels.values() if c.worker is not None and not c.worker.done()]
        if not workers:
            return True
        _, pending = await asyncio.wait(workers, timeout=timeout)
        return not pending and self.waiting() == 0

    async def close(self, timeout: float = 10.0) -> None:
        """Stop taking messages, give the queues `timeout` to drain, then give up on the rest
        (each logged at ERROR)."""
        self._closing = True
        if not await self.drain(timeout):
            for channel, ch in self._channels.items():
                if ch.worker is not None and not ch.worker.done():
                    ch.worker.cancel()
                while ch.items:
                    item = ch.items.popleft()
                    self._give_up(item, "shutting down before it could be posted")
                    log.debug("undelivered at shutdown in %s", channel)
            workers = [c.worker for c in self._channels.values() if c.worker is not None]
            await asyncio.gather(*workers, return_exceptions=True)

    # --- the worker ---------------------------------------------------------------------------

    async def _work(self, channel: str, ch: _Channel) -> None:
        while ch.items:
            if ch.last_post is not None:
                wait = ch.last_post + self.min_interval_s - self.clock()
                if wait > 0:
                    await self.sleep(wait)  # pacing: later messages for this channel may coalesce now
            item = ch.items.popleft()
            try:
                delivery = await self._deliver(item)
            except asyncio.CancelledError:
                self._give_up(item, "shutting down while it was being posted")
                raise
            ch.last_post = self.clock()
            if not item.future.done():
                item.future.set_result(delivery)

    def _give_up(self, item: _Item, why: str) -> None:
        m = item.message
        log.error("Slack message to %s not delivered (%s; key %r): %s", m.channel, why, m.key, m.summary)
        if not item.future.done():
            item.future.set_result(Delivery(False, m.channel, error=why, replaced=item.replaced))

    async def _deliver(self, item: _Item) -> Delivery:
        message = item.message
        if item.replaced:
            note = (
                f"(this replaces {item.replaced} earlier message(s) on the same subject that were "
                "still queued)"
            )
            message = replace(
                message,
                text=f"{message.text}\n{note}",
                blocks=(
                    [*message.blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}]
                    if message.blocks
                    else None
                ),
            )
        attempts, result = await self._with_retries(message, "post", lambda: self._post(message))
        if isinstance(result, _Failure):
            log.error(
                "Slack message to %s not delivered after %d attempt(s) (%s; key %r): %s",
                message.channel,
                attempts,
                result.error,
                message.key,
                message.summary,
            )
            return Delivery(
                False, message.channel, error=result.error, attempts=attempts, replaced=item.replaced
            )
        posted_channel, ts = result
        image_error = None
        if message.image is not None and ts is not None:
            image = message.image
            _, up = await self._with_retries(
                message, "upload", lambda: self._upload(posted_channel, ts, image)
            )
            if isinstance(up, _Failure):
                image_error = up.error
                log.error(
                    "chart %s for the message %s in %s not uploaded: %s",
                    image.name,
                    ts,
                    message.channel,
                    up.error,
                )
        return Delivery(
            True, message.channel, ts, attempts=attempts, replaced=item.replaced, image_error=image_error
        )

    async def _with_retries(
        self, message: OutgoingMessage, what: str, call: Callable[[], Any]
    ) -> tuple[int, Any]:
        attempt = 0
        while True:
            attempt += 1
            try:
                return attempt, await asyncio.to_thread(_classify, call, self.backoff_s * 2 ** (attempt - 1))
            except _Permanent as e:
                return attempt, _Failure(str(e))
            except _Retry as r:
                if attempt >= self.max_attempts:
                    return attempt, _Failure(f"{r.why}; gave up after {attempt} attempts")
                log.warning(
                    "Slack %s to %s %s: retrying in %.1f s (attempt %d of %d, key %r)",
                    what,
                    message.channel,
                    "rate-limited (429)" if r.rate_limited else f"failed ({r.why})",
                    r.wait_s,
                    attempt,
                    self.max_attempts,
                    message.key,
                )
                await self.sleep(r.wait_s)

    def _post(self, m: OutgoingMessage) -> tuple[str, str | None]:
        if m.ephemeral_user is not None:
            self.client.chat_postEphemeral(
                channel=m.channel, user=m.ephemeral_user, text=m.text, blocks=m.blocks, thread_ts=m.thread_ts
            )
            return m.channel, None
        resp = self.client.chat_postMessage(
            channel=m.channel,
            text=m.text,
            blocks=m.blocks,
            thread_ts=m.thread_ts,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(resp.get("channel") or m.channel), str(resp["ts"]) if resp.get("ts") else None

    def _upload(self, channel: str, thread_ts: str, image: Image) -> None:
        self.client.files_upload_v2(
            channel=channel,
            thread_ts=thread_ts,
            content=image.data,
            filename=image.name,
            title=image.alt or image.name,
            alt_txt=image.alt or image.name,
        )


@dataclass(frozen=True)
class _Failure:
    error: str


def _classify(call: Callable[[], Any], backoff_s: float) -> Any:
    """Run one blocking Slack call; turn its failure into _Retry (with how long to wait) or
    _Permanent. Runs in a worker thread."""
    try:
        return call()
    except SlackApiError as e:
        status = e.response.status_code
        error = str(e.response.get("error") or f"HTTP {status}")
        if status == 429:
            raise _Retry(retry_after_s(e.response.headers), error, rate_limited=True) from None
        if status >= 500 or error in TRANSIENT_ERRORS:
            raise _Retry(backoff_s, error, rate_limited=False) from None
        raise _Permanent(error) from None
    except (OSError, TimeoutError) as e:  # connection refused/reset, DNS, timeouts (URLError is OSError)
        raise _Retry(backoff_s, type(e).__name__, rate_limited=False) from None
