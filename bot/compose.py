"""Wiring: build a `Bot` from settings, and run it with an adapter plus its background work.

Used by `rayops bot run` (bot/cli/botrun.py) and by `rayops up` (issue 6), which builds its own
backend and event source and calls `run_console(bot, events, stdin, stdout)` on its main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TextIO

from bot.adapters.base import ChatAdapter
from bot.adapters.console import ConsoleAdapter
from bot.approvals import DirectoryApprovalStore
from bot.audit import JsonlAuditLog
from bot.authz import AccessView
from bot.chart import EventHistory, History
from bot.core import Bot, PolicyProvider
from bot.notify import Notifier
from bot.settings import BotSettings
from bot.switch import FilePauseSwitch
from controller.backends.base import ClusterBackend
from controller.events import EventSource, JournalSource
from controller.policy.loader import PolicyStore

log = logging.getLogger("rayops.bot")


def journal_history(settings: BotSettings) -> History:
    """History from the laptop journal (every read re-reads the tail: charts are rare)."""
    journal = JournalSource(settings.journal_path, from_start=True)
    return EventHistory(lambda ref: journal.history(ref))


def build_bot(
    settings: BotSettings,
    backend: ClusterBackend,
    policies: PolicyProvider,
    history: History | None = None,
) -> Bot:
    """A bot keeping its durable state (approvals, audit, global switch) in the state directory."""
    return Bot(
        backend,
        policies,
        DirectoryApprovalStore(settings.approvals_dir),
        JsonlAuditLog(settings.audit_path),
        FilePauseSwitch(settings.pause_switch_path),
        settings,
        history=history if history is not None else journal_history(settings),
    )


async def background(
    bot: Bot,
    notifier: Notifier,
    stop: asyncio.Event,
    interval_s: float,
    reload: Callable[[], object] | None = None,
) -> None:
    """Every interval: reload policies, route new events, expire approvals. One failing round is
    logged with its trace and the next round runs: the notifier must outlive a bad event."""
    while not stop.is_set():
        try:
            if reload is not None:
                await asyncio.to_thread(reload)
            await bot.deliver(await asyncio.to_thread(notifier.pump))
            await bot.tick()
        except Exception:
            log.exception("background round failed; trying again next interval")
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass


async def serve(
    bot: Bot,
    adapter: ChatAdapter,
    events: EventSource,
    reload: Callable[[], object] | None = None,
) -> None:
    """Run `adapter` until it stops, with notifications and housekeeping beside it."""
    bot.notify = adapter
    notifier = Notifier(
        events,
        adapter,
        lambda: AccessView.of(ps.access_policies.values()) if (ps := bot.policies()) else AccessView(),
        adapter.platform,
        backend=bot.backend,
        scaled_interval=bot.settings.scaled_summary,
        alert_repeat=bot.settings.alert_repeat,
        clock=bot.clock,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(background(bot, notifier, stop, bot.settings.poll_interval_s, reload))
    try:
        await adapter.start(bot.handle)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await adapter.stop()


async def serve_console(
    bot: Bot,
    events: EventSource,
    stdin: TextIO,
    stdout: TextIO,
    reload: Callable[[], object] | None = None,
) -> None:
    await serve(bot, ConsoleAdapter(bot.settings.console_user, stdin, stdout), events, reload)


def run_console(
    bot: Bot,
    events: EventSource,
    stdin: TextIO,
    stdout: TextIO,
    reload: Callable[[], object] | None = None,
) -> int:
    """The console REPL on this thread until end of input or `exit`; returns an exit code.

    `rayops up` calls this on its main thread with its own backend and event source (the
    in-memory events its controller thread publishes to, or the journal)."""
    asyncio.run(serve_console(bot, events, stdin, stdout, reload))
    return 0


def policy_provider(store: PolicyStore) -> PolicyProvider:
    return lambda: store.current
