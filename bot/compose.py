"""Wiring: build a `Bot` from settings, and run it with an adapter plus its background work.

Used by `rayops bot run` (bot/cli/botrun.py), through `build_runtime`, and by `rayops up` (issue 6),
which builds its own backend and event source and calls `run_console(bot, events, stdin, stdout)`
on its main thread.

Per backend (`RAYOPS_BOT_BACKEND`, docs/deploy.md section 3):
- memory: clusters in this process only; approvals and the global switch in the state directory;
  notifications and history from the journal (`events.jsonl`);
- local: `LocalBackend` on the state directory; the rest as for memory;
- kuberay: `KubeRayBackend` in the managed namespaces; approvals and the global switch as ConfigMaps
  (bot/kube_store.py); notifications and history from the controller's Kubernetes Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

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
from controller.policy.model import ClusterProfile, ScalingPolicy

if TYPE_CHECKING:
    from bot.adapters.runtime import HealthServer
    from controller.backends.kube_api import KubeApi

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
    health: HealthServer | None = None,
) -> None:
    """`health` (the `/healthz` and `/readyz` server) runs on this loop beside the console, so a
    wedged loop fails the liveness probe, as with the chat adapters (bot/adapters/launch.py)."""
    if health is not None:
        await health.start()
    try:
        await serve(bot, ConsoleAdapter(bot.settings.console_user, stdin, stdout), events, reload)
    finally:
        if health is not None:
            await health.stop()


def run_console(
    bot: Bot,
    events: EventSource,
    stdin: TextIO,
    stdout: TextIO,
    reload: Callable[[], object] | None = None,
    health: HealthServer | None = None,
) -> int:
    """The console REPL on this thread until end of input or `exit`; returns an exit code.

    `rayops up` calls this on its main thread with its own backend and event source (the
    in-memory events its controller thread publishes to, or the journal)."""
    asyncio.run(serve_console(bot, events, stdin, stdout, reload, health))
    return 0


def policy_provider(store: PolicyStore) -> PolicyProvider:
    return lambda: store.current


class SetupError(ValueError):
    """The backend cannot be set up from these settings (no kubeconfig, say); the message says why."""


@dataclass
class Runtime:
    """A bot wired for its backend, the event source its notifier reads, and what to close at exit."""

    bot: Bot
    events: EventSource
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # closing is best effort at exit; say what failed
                log.exception("closing %s failed", close)
        self.closers.clear()


def build_runtime(settings: BotSettings, store: PolicyStore, *, api: KubeApi | None = None) -> Runtime:
    """Everything `rayops bot run` needs for `settings.backend` (see the module docstring). `api`
    replaces the Kubernetes credentials lookup (tests pass one with the bot's own token)."""

    def profiles() -> Mapping[str, ClusterProfile]:
        return store.current.cluster_profiles if store.current is not None else {}

    if settings.backend == "kuberay":
        return _kuberay_runtime(settings, store, profiles, api)
    closers: list[Callable[[], None]] = []
    backend: ClusterBackend
    if settings.backend == "local":
        from controller.backends.local import LocalBackend

        # No operator thread here: the process holding the controller lock starts and stops workers
        # (contracts.md section 7); this one creates, reads and deletes under the state file lock.
        local = LocalBackend(profiles, state_dir=settings.state_dir)
        closers.append(local.close)
        backend = local
    else:
        from controller.backends.memory import MemoryBackend

        backend = MemoryBackend(profiles, ready_on_create=settings.ready_on_create)
    bot = build_bot(settings, backend, policy_provider(store))
    return Runtime(bot, JournalSource(settings.journal_path), closers)


def _kuberay_runtime(
    settings: BotSettings,
    store: PolicyStore,
    profiles: Callable[[], Mapping[str, ClusterProfile]],
    api: KubeApi | None,
) -> Runtime:
    from kubernetes.config import ConfigException

    from bot.kube_store import ConfigMapApprovalStore, ConfigMapPauseSwitch
    from controller.backends.kube_api import KubeApi
    from controller.backends.kuberay import KubeRayBackend
    from controller.backends.kuberay_events import KubeEventSource, cluster_events

    closers: list[Callable[[], None]] = []
    if api is None:
        try:
            api = KubeApi.from_environment(settings.kubeconfig)
        except (ConfigException, OSError) as e:
            raise SetupError(f"cannot reach Kubernetes: no usable kubeconfig or ServiceAccount ({e})") from e
        closers.append(api.api_client.close)

    def scaling() -> Mapping[str, ScalingPolicy]:
        return store.current.scaling_policies if store.current is not None else {}

    kube = api
    backend = KubeRayBackend(kube, profiles, policies=scaling, namespaces=settings.namespaces)
    bot = Bot(
        backend,
        policy_provider(store),
        ConfigMapApprovalStore(kube, settings.namespaces),
        JsonlAuditLog(settings.audit_path),
        ConfigMapPauseSwitch(kube, settings.rayops_namespace),
        settings,
        history=EventHistory(lambda ref: cluster_events(kube, ref)),
    )
    # Cluster-less events (a refused policy set) are filed in rayops' own namespace.
    namespaces = (
        list(dict.fromkeys([*settings.namespaces, settings.rayops_namespace]))
        if settings.namespaces is not None
        else None
    )
    return Runtime(bot, KubeEventSource(kube, namespaces), closers)
