"""Fixtures for Slack: a loopback Web API stand-in, and real bolt apps wired to it over HTTP or Socket Mode.

Why these shapes:
- `slack_api` is function-scoped: starting the stand-in is one thread and one bind (~10 ms), and a fresh
  one per test means recorded calls, rate limits and usergroups never leak between tests.
- `make_slack_app` builds a real `slack_bolt.App` whose `WebClient` points at the stand-in. The token
  travels on the client (`App(token=..., client=...)` would ignore the token and warn), `auth.test` runs
  at construction against the stand-in, and each app gets its own listener thread pool that is shut down
  at teardown, so no listener is still posting when the stand-in stops.
- `serve_slack_app` serves an app through bolt's WSGI adapter on 127.0.0.1 (never `app.start()`, which
  binds 0.0.0.0) and returns a small client that signs requests like Slack.
- `connect_socket_mode` runs an app over slack_sdk's builtin Socket Mode client, connected to the
  stand-in's WebSocket, and closes it at teardown, checking that its threads have ended.

All proxy variables are removed for the test: slack_sdk sends every request, loopback included, through
`HTTPS_PROXY` when one is set, which would take test traffic off the host.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler

from tests.standins.slack_api import HOST, SlackApiStandIn
from tests.standins.slack_signing import FORM_CONTENT_TYPE, HttpReply, SignedRequest, signed_request

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-1-rayops-test"
APP_TOKEN = "xapp-1-A0RAYOPS1-1-rayops-test"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")

_log = logging.getLogger(__name__)


@pytest.fixture
def slack_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackApiStandIn]:
    """A fresh Slack Web API stand-in on 127.0.0.1 (see `tests/standins/slack_api.py`)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with SlackApiStandIn() as api:
        yield api


@pytest.fixture
def make_slack_app(slack_api: SlackApiStandIn) -> Iterator[Callable[..., App]]:
    """`make_slack_app(**app_kwargs) -> App`: a bolt App talking to `slack_api`.

    Keywords: `signing_secret` (default SIGNING_SECRET), `token` (default BOT_TOKEN), any other `App`
    keyword (e.g. `process_before_response=True`, `token_verification_enabled=False`).
    """
    executors: list[ThreadPoolExecutor] = []

    def make(*, signing_secret: str = SIGNING_SECRET, token: str = BOT_TOKEN, **app_kwargs: Any) -> App:
        executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bolt-listener")
        executors.append(executor)
        app_kwargs.setdefault("client", slack_api.web_client(token))
        return App(signing_secret=signing_secret, listener_executor=executor, **app_kwargs)

    yield make
    for executor in executors:
        executor.shutdown(wait=True)


@dataclass(frozen=True)
class BoltHttpServer:
    """Where an app is served, and how to send it requests signed like Slack's."""

    url: str
    signing_secret: str

    def request(
        self,
        body: bytes,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        content_type: str = FORM_CONTENT_TYPE,
    ) -> SignedRequest:
        """A signed request that can be sent (and resent unchanged) with `.send()`.

        `secret` defaults to the app's; pass another to get a wrong signature. `timestamp` defaults to now.
        """
        return signed_request(
            self.url,
            body,
            self.signing_secret if secret is None else secret,
            timestamp=timestamp,
            content_type=content_type,
        )

    def post(self, body: bytes, **options: Any) -> HttpReply:
        return self.request(body, **options).send()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, all joined by `server_close()` (so none outlives the fixture)."""

    daemon_threads = False
    block_on_close = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("bolt http: " + format, *args)


@pytest.fixture
def serve_slack_app() -> Iterator[Callable[..., BoltHttpServer]]:
    """`serve_slack_app(app, path="/slack/events", signing_secret=SIGNING_SECRET) -> BoltHttpServer`."""
    running: list[tuple[WSGIServer, threading.Thread]] = []

    def serve(app: App, path: str = "/slack/events", signing_secret: str = SIGNING_SECRET) -> BoltHttpServer:
        server = make_server(
            HOST,
            0,
            SlackRequestHandler(app, path=path),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="bolt-wsgi", daemon=True
        )
        thread.start()
        running.append((server, thread))
        return BoltHttpServer(f"http://{HOST}:{server.server_port}{path}", signing_secret)

    yield serve
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(5)


def close_socket_mode(
    handler: SocketModeHandler, slack_api: SlackApiStandIn | None = None, timeout: float = 5.0
) -> None:
    """Close the builtin client quickly and check that its threads ended.

    `handler.close()` alone takes about 3 s: the receive thread sits in a blocking `recv` with a 3 s
    timeout and its message processor in a 1 s queue wait. So first switch off reconnecting, mark the
    session terminated, wake the queue and shut the socket down (which ends the `recv` at once); then
    close as usual and join the threads. After a reconnect the client may still hold the previous link
    (slack_sdk closes it only after that `recv` times out); pass `slack_api` to have the stand-in close
    every link from its side too.
    """
    client = handler.client
    runners = [client.current_session_runner, client.current_app_monitor, client.message_processor]
    threads = [r.thread for r in runners if r.thread is not None]
    client.closed = True
    client.auto_reconnect_enabled = False
    client.current_session_state.terminated = True
    client.message_queue.put(None)
    session = client.current_session
    if session is not None and session.sock is not None:
        try:
            session.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone: nothing to wake
    if slack_api is not None:
        slack_api.close_links(timeout)
    handler.close()
    for thread in threads:
        thread.join(timeout)
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        raise AssertionError(f"Socket Mode client threads still alive after close: {alive}")


@pytest.fixture
def connect_socket_mode(slack_api: SlackApiStandIn) -> Iterator[Callable[..., SocketModeHandler]]:
    """`connect_socket_mode(app, app_token=APP_TOKEN, **handler_kwargs) -> SocketModeHandler`, connected.

    Returns once the stand-in has sent `hello` on the new link; closed (threads joined) at teardown.
    """
    handlers: list[SocketModeHandler] = []

    def connect(app: App, app_token: str = APP_TOKEN, **handler_kwargs: Any) -> SocketModeHandler:
        handler = SocketModeHandler(app, app_token, **handler_kwargs)
        handlers.append(handler)
        opened = slack_api.links_opened()
        handler.connect()
        slack_api.wait_for_socket_connection(opened + 1)
        return handler

    yield connect
    for handler in handlers:
        if not handler.client.closed:
            close_socket_mode(handler, slack_api)
