"""The Slack adapter: a real slack-bolt `App` in Socket Mode (default) or HTTP mode.

Shape (style.md A5): bolt's synchronous `App` receives everything, over the builtin Socket Mode
client (an outbound WebSocket: a cluster often has no inbound route) or over HTTP through bolt's
WSGI adapter (signature checked by bolt, replays refused by `ReplayGuard`). Every listener is a
lazy listener: the ack function only acks, so Slack's 3 s deadline is met whatever the command does,
and the lazy part converts the payload (`bot.adapters.slack_convert`) and hands it to the bot's
event loop, where `Bot.handle` runs and the answer is sent. Bolt's threads never wait for the bot.
With `process_before_response` the ack function runs inside the request itself (bolt otherwise runs
it on its pool and polls for the ack every 10 ms): measured by benchmark P4, it halves the p99.

Answers: a slash command or a button press is answered on its `response_url` (ephemeral when the
reply says so, or when a press was refused); a reply with a chart is posted with
`chat.postMessage` and the PNG uploaded into its thread (`files_upload_v2`). Mentions and direct
messages are answered in their thread. Notifications go to the DevOps channel or the person (a
requester's outcome into the thread where they asked, when there is one). Every
`chat.postMessage` goes through the per-channel queue (`bot.adapters.slack_queue`), which honours
429 `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import Ack, App, BoltContext
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.adapters.base import (
    CommandCallback,
    DestinationKind,
    IncomingCommand,
    Notification,
    Platform,
    Reply,
    ReplyStatus,
)
from bot.adapters.runtime import Readiness, SettingsError
from bot.adapters.slack_convert import (
    ACTION_ID_PATTERN,
    Origin,
    answer_privately,
    from_block_action,
    from_message_event,
    from_slash_command,
    message_parts,
)
from bot.adapters.slack_groups import SlackGroupResolver
from bot.adapters.slack_guard import ReplayGuard
from bot.adapters.slack_queue import ChannelQueues, OutgoingMessage, retry_after_s
from bot.adapters.slack_settings import SlackSettings

log = logging.getLogger("rayops.bot.slack")
# slack_sdk's webhook client logs each request's URL at DEBUG. A response URL lets whoever holds it
# post into the channel for 30 minutes, so the client gets a logger that never emits DEBUG.
_webhook_log = logging.getLogger("rayops.bot.slack.webhook")
_webhook_log.setLevel(logging.INFO)
# Likewise the Socket Mode client logs every envelope it receives at DEBUG, response URLs included:
# its logger keeps INFO and above (connects, reconnects, errors).
_socket_log = logging.getLogger("rayops.bot.slack.socket")
_socket_log.setLevel(logging.INFO)

STOP_GRACE_S = 20.0  # commands in flight may finish this long after stop() is asked


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the request threads: none outlives stop()
    request_queue_size = 128  # socketserver's default backlog of 5 drops a burst of Slack requests


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class SlackAdapter:
    """`ChatAdapter` for Slack; see the module docstring. `client` replaces the Web API client
    (tests point it at a stand-in); otherwise it is built from the settings."""

    platform = Platform.SLACK

    def __init__(
        self, settings: SlackSettings, *, client: WebClient | None = None, listener_threads: int = 8
    ) -> None:
        self.settings = settings
        # The token goes on the client: bolt ignores App(token=...) when a client is given.
        self.client = client or WebClient(
            token=settings.bot_token, base_url=settings.api_url, timeout=settings.request_timeout_s
        )
        self.queue = ChannelQueues(
            self.client, min_interval_s=settings.min_interval_s, max_attempts=settings.max_attempts
        )
        self.replay_guard = ReplayGuard(max_entries=settings.replay_cache_size)
        self.listener_threads = listener_threads
        self.app: App | None = None
        self.bot_user_id: str | None = None
        self.url: str | None = None  # HTTP mode: the events URL it listens on
        self._executor: ThreadPoolExecutor | None = None
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None
        self._socket: SocketModeHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_command: CommandCallback | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopping = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, on_command: CommandCallback) -> None:
        """Connect (Socket Mode) or listen (HTTP), then deliver commands until `stop()`."""
        self._loop = asyncio.get_running_loop()
        self._on_command = on_command
        self._executor = ThreadPoolExecutor(self.listener_threads, thread_name_prefix="slack-listener")
        try:
            try:
                self.app = await asyncio.to_thread(self._build_app)  # auth.test: a bad token fails here
            except (BoltError, SlackApiError) as e:
                raise SettingsError(f"Slack did not accept SLACK_BOT_TOKEN: {e}") from None
            if self.settings.mode == "http":
                await asyncio.to_thread(self._serve_http, self.app)
            else:
                try:
                    await asyncio.to_thread(self._connect_socket, self.app)
                except SlackApiError as e:
                    raise SettingsError(
                        f"Slack did not accept SLACK_APP_TOKEN: {e.response.get('error')}"
                    ) from None
        except BaseException:
            await self.stop()
            raise
        self._ready.set()
        await self._stop_requested.wait()
        await self.stop()

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    def readiness(self) -> Readiness:
        if self._stopping:
            return Readiness(False, "stopping")
        if not self._ready.is_set():
            return Readiness(False, "starting")
        if self._socket is not None and not self._socket.client.is_connected():
            return Readiness(False, "Socket Mode link down (reconnecting)")
        return Readiness(True, f"slack {self.settings.mode} mode ready")

    async def stop(self) -> None:
        """Stop taking requests, let commands in flight answer (up to STOP_GRACE_S), drain the
        outgoing queues, release the threads. Idempotent; concurrent callers all wait for it."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._stop_requested.set()
        self._ready.clear()
        try:
            await asyncio.to_thread(self._close_inbound)
            if self._tasks:
                _, late = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_S)
                for task in late:
                    log.error("a command was still running at shutdown; its answer is lost")
                    task.cancel()
            await self.queue.close()
            if self._executor is not None:
                await asyncio.to_thread(self._executor.shutdown, True)
        finally:
            self._stopped.set()

    def _build_app(self) -> App:
        s = self.settings
        app = App(
            client=self.client,
            signing_secret=s.signing_secret or "",
            request_verification_enabled=s.mode == "http",
            token_verification_enabled=True,
            process_before_response=True,
            listener_executor=self._executor,
        )
        if s.mode == "http":
            app.use(self.replay_guard)  # after bolt's RequestVerification: sees verified requests only
        app.command(s.command)(ack=self._ack, lazy=[self._lazy_command])
        app.action(ACTION_ID_PATTERN)(ack=self._ack, lazy=[self._lazy_action])
        app.event("app_mention")(ack=self._ack, lazy=[self._lazy_mention])
        app.event("message")(ack=self._ack, lazy=[self._lazy_message])
        self.bot_user_id = self.client.auth_test().get("user_id")
        return app

    def _serve_http(self, app: App) -> None:
        s = self.settings
        server = make_server(
            s.host,
            s.port,
            SlackRequestHandler(app, path=s.path),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self._http = server
        self._http_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="slack-http", daemon=True
        )
        self._http_thread.start()
        self.url = f"http://{s.host}:{server.server_port}{s.path}"
        log.info("Slack HTTP mode: listening on %s:%d%s", s.host, server.server_port, s.path)

    def _connect_socket(self, app: App) -> None:
        assert self.settings.app_token is not None
        self._socket = SocketModeHandler(app, self.settings.app_token, logger=_socket_log)
        self._socket.connect()
        log.info("Slack Socket Mode: connected")

    def _close_inbound(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            if self._http_thread is not None:
                self._http_thread.join(5)
        if self._socket is not None:
            _close_socket_mode(self._socket)

    # --- bolt listeners (bolt's threads) ------------------------------------------------------

    def _ack(self, ack: Ack) -> None:
        ack()

    def _lazy_command(self, body: dict[str, Any]) -> None:
        self._schedule(*from_slash_command(body))

    def _lazy_action(self, body: dict[str, Any]) -> None:
        found = from_block_action(body)
        if found is not None:
            self._schedule(*found)

    def _lazy_mention(self, event: dict[str, Any], context: BoltContext) -> None:
        found = from_message_event(event, context.bot_user_id or self.bot_user_id, "mention")
        if found is not None:
            self._schedule(*found)

    def _lazy_message(self, event: dict[str, Any], context: BoltContext) -> None:
        if event.get("channel_type") != "im":
            return  # only direct messages are commands without a mention
        found = from_message_event(event, context.bot_user_id or self.bot_user_id, "dm")
        if found is not None:
            self._schedule(*found)

    def _schedule(self, command: IncomingCommand, origin: Origin) -> None:
        loop = self._loop
        if loop is None or self._stopping or loop.is_closed():
            log.warning("a Slack %s from %s arrived while stopping; not run", origin.kind, command.user_id)
            return
        try:
            loop.call_soon_threadsafe(self._spawn, command, origin)
        except RuntimeError:  # the loop closed between the check and the call
            log.warning("a Slack %s from %s arrived after shutdown; not run", origin.kind, command.user_id)

    def _spawn(self, command: IncomingCommand, origin: Origin) -> None:
        if self._stopping:
            log.warning("a Slack %s from %s arrived while stopping; not run", origin.kind, command.user_id)
            return
        task = asyncio.get_running_loop().create_task(self._serve(command, origin))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- answering (event loop) ---------------------------------------------------------------

    async def _serve(self, command: IncomingCommand, origin: Origin) -> None:
        assert self._on_command is not None
        try:
            reply = await self._on_command(command)
        except Exception:  # Bot.handle never raises; a callback that does still gets an answer
            log.exception("the command callback failed for a Slack %s", origin.kind)
            reply = Reply("Something went wrong on my side; try again in a minute.", ReplyStatus.ERROR)
        await self._answer(command, origin, reply)

    async def _answer(self, command: IncomingCommand, origin: Origin, reply: Reply) -> None:
        private = answer_privately(command, reply)
        text, blocks = message_parts(reply)
        if origin.response_url is not None:
            if reply.image is not None and not private and origin.channel:
                posted = await self.queue.submit(
                    OutgoingMessage(origin.channel, text, blocks, image=reply.image)
                )
                if posted.ok:
                    return
                log.warning(
                    "could not post the answer with its chart in %s (%s); answering without the chart",
                    origin.channel,
                    posted.error,
                )
            await self._respond(origin.response_url, text, blocks, private)
            return
        if origin.channel is None:
            log.error("a Slack %s from %s has nowhere to be answered", origin.kind, command.user_id)
            return
        await self.queue.submit(
            OutgoingMessage(
                origin.channel,
                text,
                blocks,
                thread_ts=origin.thread_ts,
                ephemeral_user=command.user_id if private else None,
                image=None if private else reply.image,
            )
        )

    async def _respond(self, url: str, text: str, blocks: list[dict[str, Any]], private: bool) -> bool:
        """Post to a `response_url` (usable 5 times in 30 minutes; its own limits, so not through
        the channel queue). Retries connection failures, 5xx and 429; the URL itself is never
        logged (whoever has it may post into the channel)."""
        body = {
            "text": text,
            "blocks": blocks,
            "response_type": "ephemeral" if private else "in_channel",
            "replace_original": False,
        }
        webhook = WebhookClient(
            url, timeout=self.settings.request_timeout_s, proxy=self.client.proxy, logger=_webhook_log
        )
        attempts = 3
        for attempt in range(1, attempts + 1):
            wait = float(attempt)
            try:
                resp = await asyncio.to_thread(webhook.send_dict, body)
            except (OSError, TimeoutError) as e:
                why = type(e).__name__
            else:
                if resp.status_code == 200:
                    return True
                why = f"HTTP {resp.status_code} {resp.body[:60]!r}"
                if resp.status_code == 429:
                    wait = retry_after_s(resp.headers, wait)
                elif resp.status_code < 500:
                    break
            if attempt < attempts:
                log.warning("answer on the response URL failed (%s); retrying in %.0f s", why, wait)
                await asyncio.sleep(wait)
        log.error("answer on the response URL not delivered (%s): %s", why, text.splitlines()[0][:80])
        return False

    async def send_reply(self, command: IncomingCommand, reply: Reply) -> None:
        """Answer a command that carries no response URL: in its channel and thread."""
        origin = Origin(command.channel_id, command.user_id, thread_ts=command.thread_id, kind="reply")
        await self._answer(command, origin, reply)

    async def post_notification(self, notification: Notification) -> None:
        """Queue a notification and return at once (the queue logs what it could not deliver).
        A person's notification about a request goes into the thread where they asked, naming
        them; otherwise to their direct messages (`chat.postMessage` to a user id)."""
        to = notification.to
        if to.platform is not Platform.SLACK:
            log.warning("not a Slack destination (%s); notification dropped", to.platform)
            return
        mention = None
        thread = None
        channel = to.id
        if to.kind is DestinationKind.USER and notification.thread_channel and notification.thread_id:
            channel, thread, mention = notification.thread_channel, notification.thread_id, to.id
        elif to.kind is DestinationKind.CHANNEL and notification.thread_channel == to.id:
            thread = notification.thread_id
        text, blocks = message_parts(notification.reply, mention)
        self.queue.submit(
            OutgoingMessage(
                channel, text, blocks, thread_ts=thread, image=notification.reply.image, key=notification.key
            )
        )

    def group_resolver(self, wanted: Callable[[], Iterable[str]]) -> SlackGroupResolver:
        """The `GroupResolver` for access rules naming Slack user groups, over this adapter's client;
        `wanted` says which group ids the policies name (`slack_groups_named`)."""
        return SlackGroupResolver(self.client, wanted, ttl_s=self.settings.group_ttl_s)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued message was posted or given up (tests, shutdown)."""
        return await self.queue.drain(timeout)


def _close_socket_mode(handler: SocketModeHandler, timeout: float = 5.0) -> None:
    """Close the builtin Socket Mode client without its ~3 s wait: its receive thread sits in a
    blocking `recv` (3 s timeout) and its message processor in a 1 s queue wait, so switch off
    reconnecting, wake both and shut the socket, then close as usual and join the threads. Uses
    the client's attributes where they exist; without them this is a plain (slower) close."""
    client = handler.client
    threads = [
        t
        for r in (
            getattr(client, "current_session_runner", None),
            getattr(client, "current_app_monitor", None),
            getattr(client, "message_processor", None),
        )
        if r is not None and (t := getattr(r, "thread", None)) is not None and t.ident is not None
    ]
    with contextlib.suppress(AttributeError):
        client.closed = True
        client.auto_reconnect_enabled = False
        client.current_session_state.terminated = True
        client.message_queue.put(None)
    session = getattr(client, "current_session", None)
    sock = getattr(session, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    handler.close()
    for t in threads:
        t.join(timeout)
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        log.warning("Socket Mode threads still running after close: %s", alive)
