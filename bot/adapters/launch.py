"""Running a chat adapter as its own process (`rayops bot run --adapter slack|matrix`).

The part of the composition root that is about chat: read the adapter's settings from the
environment (tokens from variables or `*_FILE`s, added to the redactor at once), build the adapter,
give the bot the Slack user-group resolver, serve `/healthz` and `/readyz` on `RAYOPS_HTTP_PORT`
(8080; empty or `off` turns them off; bound to 0.0.0.0 only in a pod, `RAYOPS_HTTP_HOST` to
override), stop cleanly on SIGTERM/SIGINT, and run `bot.compose.serve`. Settings mistakes end the
process with exit code 2 and a sentence naming the variable; a start-up failure (Slack refusing the
token, the homeserver refusing the login) with exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from bot.adapters.base import ChatAdapter
from bot.adapters.runtime import HealthServer, Readiness, SettingsError, default_host
from bot.compose import serve
from bot.core import Bot
from controller.events import EventSource

if TYPE_CHECKING:
    from bot.adapters.matrix import MatrixAdapter
    from bot.adapters.slack import SlackAdapter

log = logging.getLogger("rayops.bot")

ADAPTERS = ("slack", "matrix")


def build_adapter(name: str, bot: Bot, env: Mapping[str, str]) -> SlackAdapter | MatrixAdapter:
    """The adapter named `name`, configured from `env`; raises SettingsError."""
    if name == "slack":
        from bot.adapters.slack import SlackAdapter
        from bot.adapters.slack_groups import slack_groups_named
        from bot.adapters.slack_settings import SlackSettings

        slack = SlackAdapter(SlackSettings.from_env(env))
        bot.groups = slack.group_resolver(lambda: slack_groups_named(bot.policies()))
        return slack
    if name == "matrix":
        from bot.adapters.matrix import MatrixAdapter
        from bot.adapters.matrix_settings import MatrixSettings

        return MatrixAdapter(MatrixSettings.from_env(env))
    raise SettingsError(f"unknown chat adapter {name!r} (expected one of {', '.join(ADAPTERS)})")


def health_server(env: Mapping[str, str], readiness: Callable[[], Readiness]) -> HealthServer | None:
    text = (env.get("RAYOPS_HTTP_PORT") or "8080").strip().lower()
    if text in ("", "off", "none"):
        return None
    try:
        port = int(text)
    except ValueError:
        raise SettingsError(f"RAYOPS_HTTP_PORT must be a port number or off, not {text!r}") from None
    return HealthServer(env.get("RAYOPS_HTTP_HOST") or default_host(env), port, readiness)


def run_chat(
    name: str,
    bot: Bot,
    events: EventSource,
    reload: Callable[[], object] | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run the adapter until SIGTERM/SIGINT; returns the process exit code."""
    env = os.environ if env is None else env
    try:
        adapter = build_adapter(name, bot, env)
        health = health_server(env, adapter.readiness)
    except SettingsError as e:
        print(f"rayops: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(bot, adapter, events, reload, health))


async def _serve(
    bot: Bot,
    adapter: ChatAdapter,
    events: EventSource,
    reload: Callable[[], object] | None,
    health: HealthServer | None,
) -> int:
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stopping.append(loop.create_task(adapter.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        if health is not None:
            try:
                await health.start()
            except OSError as e:
                log.error(
                    "cannot serve /healthz on %s:%d (%s); set RAYOPS_HTTP_PORT", health.host, health.port, e
                )
                return 1
        await serve(bot, adapter, events, reload)
    except SettingsError as e:  # a token the platform refused: no trace needed, the sentence says it
        log.error("%s", e)
        return 1
    except Exception:  # start-up failed otherwise (an unreachable server): say so, exit 1
        log.exception("the %s adapter stopped with an error", adapter.platform)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if stopping:
            await asyncio.gather(*stopping, return_exceptions=True)
        if health is not None:
            with contextlib.suppress(Exception):
                await health.stop()
    return 0
