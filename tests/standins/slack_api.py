"""A loopback stand-in of the Slack Web API, `response_url` webhooks, file uploads and Socket Mode.

Why a real server: Slack has no local edition, and mocking client methods hides what breaks in practice
(URL joining with `base_url`, form vs JSON bodies, the bearer token header, 429 with `Retry-After`, the
upload URL step of `files_upload_v2`, the Socket Mode handshake and acks). So this is an aiohttp server on
127.0.0.1, on a free port, on its own event loop in a background thread: the synchronous bolt App and an
asyncio bot can both talk to it without sharing (and deadlocking) an event loop.

What it answers (the methods rayops calls), under `/api/<method>`: `auth.test`, `chat.postMessage`,
`chat.update`, `chat.postEphemeral`, `files.getUploadURLExternal` + `POST /upload/v1/<file_id>` +
`files.completeUploadExternal`, `usergroups.users.list`, `apps.connections.open` (app token only; the URL
leads to `/link/`, a WebSocket that says `hello` and takes acks); `POST /response/<id>` for response URLs.
Errors follow Slack's: HTTP 200 with `{"ok": false, "error": ...}` (`not_authed`, `invalid_auth`,
`token_revoked`, `not_allowed_token_type`, `channel_not_found`, ...); 429 + `Retry-After` on demand.

Everything is recorded under one lock; `wait_for_*` block the calling thread (bolt runs listeners on a
thread pool, so follow-ups arrive after the HTTP ack), and `await_*` do the same for asyncio tests.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self

from aiohttp import WSMsgType, web
from slack_sdk import WebClient
from slack_sdk.http_retry import RetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.standins.slack_api_methods import ApiError, UploadedFile, WebApiState
from tests.standins.slack_payloads import DEFAULT_WORKSPACE, EnvelopeType, Workspace, socket_envelope

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ApiCall:
    """One Web API request as the stand-in saw and answered it. `at` is `time.monotonic()`."""

    method: str
    params: dict[str, Any]
    token: str | None
    at: float
    status: int
    response: dict[str, Any]


@dataclass(frozen=True)
class ResponseUrlPost:
    """One POST to a response URL (what `respond()` sends)."""

    url: str
    body: dict[str, Any]
    at: float
    status: int


@dataclass(frozen=True)
class SocketAck:
    """A message from a Socket Mode client carrying an `envelope_id`: the ack, optionally with a payload."""

    envelope_id: str
    payload: dict[str, Any] | None
    at: float
    raw: dict[str, Any]


@dataclass
class _Link:
    number: int
    ws: web.WebSocketResponse
    ready: bool = False


class SlackApiStandIn:
    """The server plus its recorded state. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, workspace: Workspace = DEFAULT_WORKSPACE, *, response_url_max_uses: int = 5) -> None:
        self.workspace = workspace
        self.response_url_max_uses = response_url_max_uses
        self._cond = threading.Condition()
        self._calls: list[ApiCall] = []
        self._rate_limits: dict[str, tuple[int, int]] = {}
        self._failures: dict[str, tuple[int, str, int]] = {}
        self._response_urls: dict[str, list[ResponseUrlPost]] = {}
        self._links: dict[int, _Link] = {}
        self._link_count = 0
        self._links_ready = 0
        self._acks: list[SocketAck] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self.port: int = self._sock.getsockname()[1]
        self._state = WebApiState(workspace, self.root_url)

    # ------------------------------------------------------------------ lifecycle

    @property
    def root_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """For `WebClient(base_url=...)`; the trailing slash matters (URLs are built with urljoin)."""
        return f"{self.root_url}/api/"

    def start(self) -> Self:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as error:  # reported to start() below
                failure.append(error)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"slack-api-standin:{self.port}", daemon=True)
        self._thread.start()
        if not started.wait(10) or failure:
            raise RuntimeError(f"Slack stand-in did not start: {failure}")
        return self

    def stop(self) -> None:
        """Close Socket Mode links (going-away), stop the server and join its thread."""
        if self._loop is None or self._thread is None:
            self._sock.close()  # never started (or already stopped): just release the port
            return
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("Slack stand-in thread did not stop")
        self._loop = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._on_api)
        app.router.add_post("/upload/v1/{file_id}", self._on_upload)
        app.router.add_post("/response/{response_id}", self._on_response_url)
        app.router.add_get("/link/", self._on_link)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def _cleanup(self) -> None:
        await self._close_all_links()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ clients

    def web_client(
        self,
        token: str = "xoxb-test",
        *,
        retry_handlers: Sequence[RetryHandler] | None = None,
        timeout: int = 5,
    ) -> WebClient:
        """A real slack_sdk client pointed here. `retry_handlers=None` keeps slack_sdk's defaults."""
        client = WebClient(token=token, base_url=self.base_url, timeout=timeout)
        if retry_handlers is not None:
            client.retry_handlers = list(retry_handlers)
        return client

    def async_web_client(self, token: str = "xoxb-test", *, timeout: int = 5) -> AsyncWebClient:
        """The asyncio client (aiohttp), for an `AsyncApp` or asyncio bot code."""
        return AsyncWebClient(token=token, base_url=self.base_url, timeout=timeout)

    # ------------------------------------------------------------------ behaviour knobs

    def rate_limit(self, method: str, count: int = 1, retry_after: int = 1) -> None:
        """Answer the next `count` calls of `method` with HTTP 429, `Retry-After: <retry_after>`."""
        with self._cond:
            self._rate_limits[method] = (count, retry_after)

    def fail(self, method: str, error: str, *, count: int = 1, status: int = 200) -> None:
        """Answer the next `count` calls of `method` with `{"ok": false, "error": error}` (HTTP `status`)."""
        with self._cond:
            self._failures[method] = (count, error, status)

    def set_usergroup(self, usergroup_id: str, user_ids: Sequence[str]) -> None:
        """Membership answered by `usergroups.users.list` (unknown groups get `no_such_subteam`)."""
        with self._cond:
            self._state.usergroups[usergroup_id] = list(user_ids)

    def revoke_token(self, token: str) -> None:
        """Later calls with `token` get `token_revoked`, as after an app is uninstalled."""
        with self._cond:
            self._state.revoked_tokens.add(token)

    # ------------------------------------------------------------------ records

    def calls(self, method: str | None = None) -> list[ApiCall]:
        with self._cond:
            return [c for c in self._calls if method is None or c.method == method]

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 5.0) -> list[ApiCall]:
        """Block until `count` calls of `method` were answered; return them (all, not just `count`)."""
        self._wait(lambda: len(self._matching(method)) >= count, timeout, f"{count} x {method}")
        return self.calls(method)

    async def await_calls(self, method: str, count: int = 1, timeout: float = 5.0) -> list[ApiCall]:
        return await asyncio.to_thread(self.wait_for_calls, method, count, timeout)

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The message as it stands now (after any `chat.update`), or None."""
        with self._cond:
            found = self._state.messages.get((channel, ts))
            return copy.deepcopy(found)

    def files(self) -> list[UploadedFile]:
        """Completed uploads (`UploadedFile`), each with the bytes that reached the upload URL."""
        with self._cond:
            return [replace(f) for f in self._state.files.values() if f.completed]

    def new_response_url(self) -> str:
        """A fresh response URL on this server, usable `response_url_max_uses` times like Slack's.

        Posts beyond that are still recorded but answered 404 `used_url` (the stand-in's wording).
        """
        response_id = uuid.uuid4().hex
        with self._cond:
            self._response_urls[response_id] = []
        return f"{self.root_url}/response/{response_id}"

    def responses(self, url: str) -> list[ResponseUrlPost]:
        with self._cond:
            return list(self._response_urls.get(url.rsplit("/", 1)[-1], []))

    def wait_for_responses(self, url: str, count: int = 1, timeout: float = 5.0) -> list[ResponseUrlPost]:
        response_id = url.rsplit("/", 1)[-1]
        self._wait(lambda: len(self._response_urls.get(response_id, [])) >= count, timeout, f"{url}")
        return self.responses(url)

    async def await_responses(self, url: str, count: int = 1, timeout: float = 5.0) -> list[ResponseUrlPost]:
        return await asyncio.to_thread(self.wait_for_responses, url, count, timeout)

    # ------------------------------------------------------------------ Socket Mode

    def socket_connections(self) -> int:
        """Socket Mode links open now (that have been sent `hello`)."""
        with self._cond:
            return sum(1 for link in self._links.values() if link.ready)

    def links_opened(self) -> int:
        """Socket Mode links opened since start, closed ones included (a reconnect makes it 2)."""
        with self._cond:
            return self._links_ready

    def wait_for_socket_connection(self, count: int = 1, timeout: float = 5.0) -> None:
        """Block until `count` links have been opened since start (each got `hello`)."""
        self._wait(lambda: self._links_ready >= count, timeout, f"Socket Mode link number {count}")

    def push_envelope(
        self,
        envelope_type: EnvelopeType,
        payload: dict[str, Any],
        *,
        envelope_id: str | None = None,
        accepts_response_payload: bool | None = None,
        timeout: float = 5.0,
    ) -> str:
        """Send an envelope on the newest open link; return its `envelope_id`."""
        envelope = socket_envelope(
            envelope_type,
            payload,
            envelope_id=envelope_id,
            accepts_response_payload=accepts_response_payload,
        )
        self._send_on_newest_link(envelope, timeout)
        return str(envelope["envelope_id"])

    def send_envelope(
        self, envelope_type: EnvelopeType, payload: dict[str, Any], *, timeout: float = 5.0
    ) -> SocketAck:
        """Push an envelope and wait for the client's ack of it."""
        return self.wait_for_ack(self.push_envelope(envelope_type, payload, timeout=timeout), timeout)

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> SocketAck:
        self._wait(lambda: any(a.envelope_id == envelope_id for a in self._acks), timeout, envelope_id)
        with self._cond:
            return next(a for a in self._acks if a.envelope_id == envelope_id)

    async def await_ack(self, envelope_id: str, timeout: float = 5.0) -> SocketAck:
        return await asyncio.to_thread(self.wait_for_ack, envelope_id, timeout)

    def acks(self) -> list[SocketAck]:
        with self._cond:
            return list(self._acks)

    def request_reconnect(self, reason: str = "refresh_requested", timeout: float = 5.0) -> None:
        """Send Slack's `disconnect` message, wait for the client's new link, then close the old one.

        Slack closes the old connection itself after a refresh; doing the same here also matters for
        speed: slack_sdk's builtin client reads the new link only after its read on the old one ends.
        """
        old = self._newest_link()
        opened = self.links_opened()
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-standin"}}
        self._run(old.ws.send_str(json.dumps(message)), timeout)
        self.wait_for_socket_connection(opened + 1, timeout)
        self._run(old.ws.close(code=1001, message=b"refreshed"), timeout)
        self._wait(lambda: old.number not in self._links, timeout, "the old Socket Mode link to close")

    def close_links(self, timeout: float = 5.0) -> None:
        """Close every Socket Mode link from the server side (close frame 1001), as Slack does on a restart.

        A client with auto-reconnect on will open a new link; one being shut down just ends its threads.
        """
        if self._loop is None:
            return
        self._run(self._close_all_links(), timeout)
        self._wait(lambda: not self._links, timeout, "Socket Mode links to close")

    async def _close_all_links(self) -> None:
        with self._cond:
            links = [link.ws for link in self._links.values()]
        for ws in links:
            await ws.close(code=1001, message=b"stand-in closing the link")

    def _newest_link(self) -> _Link:
        with self._cond:
            ready = [link for link in self._links.values() if link.ready]
        if not ready:
            raise RuntimeError("no Socket Mode client is connected to the stand-in")
        return max(ready, key=lambda link: link.number)

    def _send_on_newest_link(self, message: dict[str, Any], timeout: float) -> None:
        self._run(self._newest_link().ws.send_str(json.dumps(message)), timeout)

    def _run(self, coroutine: Coroutine[Any, Any, Any], timeout: float) -> Any:
        """Run a coroutine on the server's loop from a test thread."""
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the Slack stand-in is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # ------------------------------------------------------------------ waiting

    def _matching(self, method: str) -> list[ApiCall]:
        return [c for c in self._calls if c.method == method]

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cond:
            if self._cond.wait_for(predicate, timeout):
                return
            seen = [(c.method, c.status) for c in self._calls]
        raise AssertionError(f"Slack stand-in: timed out after {timeout} s waiting for {what}; calls: {seen}")

    # ------------------------------------------------------------------ handlers (event-loop thread)

    async def _on_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        token = _bearer(request) or params.pop("token", None)
        params.pop("token", None)
        headers: dict[str, str] = {}
        body: dict[str, Any]
        with self._cond:
            status = 200
            limit = self._rate_limits.get(method)
            failure = self._failures.get(method)
            if limit is not None and limit[0] > 0:
                self._rate_limits[method] = (limit[0] - 1, limit[1])
                status, body = 429, {"ok": False, "error": "ratelimited"}
                headers["Retry-After"] = str(limit[1])
            elif failure is not None and failure[0] > 0:
                self._failures[method] = (failure[0] - 1, failure[1], failure[2])
                status, body = failure[2], {"ok": False, "error": failure[1]}
            else:
                try:
                    body = {"ok": True, **self._state.answer(method, params, token)}
                except ApiError as error:
                    body = {"ok": False, "error": error.code, **error.extra}
            # Deep copies: a later chat.update must not rewrite what an earlier call was answered.
            record = ApiCall(
                method, copy.deepcopy(params), token, time.monotonic(), status, copy.deepcopy(body)
            )
            self._calls.append(record)
            self._cond.notify_all()
        return web.json_response(body, status=status, headers=headers)

    async def _on_upload(self, request: web.Request) -> web.Response:
        data = await _read_upload(request)
        with self._cond:
            uploaded = self._state.files.get(request.match_info["file_id"])
            if uploaded is None:
                return web.Response(status=404, text="file_not_found")
            uploaded.content = data
            self._cond.notify_all()
        return web.Response(text=f"OK - {len(data)}")

    async def _on_response_url(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.Response(status=400, text="invalid_payload")
        url = f"{self.root_url}/response/{response_id}"
        with self._cond:
            posts = self._response_urls.get(response_id)
            if posts is None:
                return web.Response(status=404, text="no_such_url")
            status = 200 if len(posts) < self.response_url_max_uses else 404
            posts.append(ResponseUrlPost(url, body, time.monotonic(), status))
            self._cond.notify_all()
        if status != 200:
            return web.Response(status=status, text="used_url")
        return web.json_response({"ok": True})

    async def _on_link(self, request: web.Request) -> web.StreamResponse:
        with self._cond:
            ticket = request.query.get("ticket", "")
            if ticket not in self._state.tickets:
                return web.Response(status=401, text="invalid or already used ticket")
            self._state.tickets.discard(ticket)  # single use: a reconnect must ask for a new URL
            self._link_count += 1
            link = _Link(self._link_count, web.WebSocketResponse(autoping=True, timeout=2.0))
            self._links[link.number] = link
        try:
            await link.ws.prepare(request)
            await link.ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self._links),
                    "debug_info": {"host": "applink-standin", "build_number": 1},
                    "connection_info": {"app_id": self.workspace.app_id},
                }
            )
            with self._cond:
                link.ready = True
                self._links_ready += 1
                self._cond.notify_all()
            async for message in link.ws:
                if message.type == WSMsgType.TEXT:
                    self._record_socket_message(message.data)
        finally:
            with self._cond:
                self._links.pop(link.number, None)
                self._cond.notify_all()
        return link.ws

    def _record_socket_message(self, text: str) -> None:
        """Keep acks (messages with an `envelope_id`); clients send nothing else that tests need."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return
        if not isinstance(data, dict) or "envelope_id" not in data:
            return
        with self._cond:
            self._acks.append(
                SocketAck(str(data["envelope_id"]), data.get("payload"), time.monotonic(), data)
            )
            self._cond.notify_all()


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[len("Bearer ") :] if header.startswith("Bearer ") else None


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Query string, then the body: JSON, form-encoded or multipart (file parts become bytes)."""
    params: dict[str, Any] = dict(request.query)
    if not request.can_read_body:
        return params
    if request.content_type == "application/json":
        data = await request.json()
        if isinstance(data, dict):
            params.update(data)
        return params
    form = await request.post()
    for key in set(form.keys()):
        values = [v.file.read() if isinstance(v, web.FileField) else v for v in form.getall(key)]
        params[key] = values[0] if len(values) == 1 else values
    return params


async def _read_upload(request: web.Request) -> bytes:
    """The raw body, or the first file part when the client sent multipart (both are accepted by Slack)."""
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        for value in form.values():
            if isinstance(value, web.FileField):
                return bytes(value.file.read())
    return await request.read()
