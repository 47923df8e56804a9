"""Fixtures for the adapter tests: a whole bot (real core, memory backend, durable approvals and
audit in a temp state directory, a policy directory written per test) composed with a real adapter
by `bot.compose.serve`, exactly as `rayops bot run` composes it.

Slack tests are synchronous (the Slack harness is: it signs and sends requests, and waits for the
stand-in's records, from the test thread), so `BotRunner` runs the bot's event loop in a thread of
its own. Matrix tests are asyncio and run the bot on the test's loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.adapters.base import ChatAdapter
from bot.adapters.slack import SlackAdapter
from bot.adapters.slack_groups import slack_groups_named
from bot.adapters.slack_settings import SlackSettings
from bot.chart import EventHistory
from bot.compose import build_bot, policy_provider, serve
from bot.core import Bot
from bot.settings import BotSettings
from controller.backends.memory import MemoryBackend
from controller.domain import ClusterRef
from controller.events import Event, EventType, MemoryEvents
from controller.policy.loader import PolicyStore
from tests.harness.slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET
from tests.standins.slack_api import SlackApiStandIn

T = TypeVar("T")

PROFILES = """\
apiVersion: rayops.io/v1alpha1
kind: ClusterProfile
metadata:
  name: small
spec:
  scalingPolicy: cpu-default
  defaultTtl: 8h
  maxTtl: 2d
  workerGroups:
    - {name: workers, cpu: "2", memory: 4Gi, defaultWorkers: 1, maxWorkers: 8}
---
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata:
  name: cpu-default
spec:
  selector: {namespaces: ["*"]}
  maxReplicas: 8
  signals:
    - {name: pending-cpu, type: pendingDemand, resource: CPU}
"""

# Slack identities match the payload builders' defaults (tests/standins/slack_payloads.py).
SLACK_ACCESS = """\
apiVersion: rayops.io/v1alpha1
kind: AccessPolicy
metadata:
  name: team
spec:
  devops:
    slack: {channel: C0DEVOPS1}
  approvers:
    - {slackUser: U0BOSS001}
    - {slackGroup: S0APPROVE}
  rules:
    - subjects: [{slackUser: U0ALICE01}, {slackUser: U0BOB0001}, {slackGroup: S0NLPTEAM}]
      namespaces: [ray-nlp]
      profiles: [small]
      limits: {clustersPerUser: 2, workersPerCluster: 4}
"""

NAMESPACE = "ray-nlp"


def write_policies(directory: Path, access: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "profiles.yaml").write_text(PROFILES)
    (directory / "access.yaml").write_text(access)
    return directory


@dataclass
class BotParts:
    """The pieces a test drives: the bot, its backend, the controller's events (what the
    notifier reads) and the scaling history (what the status chart draws)."""

    bot: Bot
    backend: MemoryBackend
    events: MemoryEvents
    history: MemoryEvents
    store: PolicyStore
    settings: BotSettings

    def scaled(self, name: str, points: list[tuple[float, int, int, int]]) -> None:
        """Scaling history for the chart: (minutes ago, ready, desired, pending demand)."""
        now = datetime.now(UTC)
        ref = ClusterRef(NAMESPACE, name)
        for minutes, ready, desired, pending in points:
            self.history.publish(
                Event(
                    EventType.SCALED_UP,
                    f"scaled to {desired}",
                    now - timedelta(minutes=minutes),
                    ref,
                    data={"group": "workers", "target": desired, "ready": ready, "pending": pending},
                )
            )


def make_bot(tmp: Path, access: str, *, ready_on_create: bool = True) -> BotParts:
    policies = write_policies(tmp / "policies", access)
    store = PolicyStore(str(policies))
    store.reload()
    assert store.current is not None, store.errors
    settings = BotSettings(
        policy_dir=policies,
        state_dir=tmp / "state",
        backend="memory",
        default_namespace=NAMESPACE,
        poll_interval_s=0.05,
        ready_on_create=ready_on_create,
    )
    backend = MemoryBackend(
        lambda: store.current.cluster_profiles if store.current is not None else {},
        ready_on_create=ready_on_create,
    )
    history = MemoryEvents()
    chart_history = EventHistory(lambda ref: [e for e in list(history.events) if e.cluster == ref])
    bot = build_bot(settings, backend, policy_provider(store), chart_history)
    return BotParts(bot, backend, MemoryEvents(), history, store, settings)


class BotRunner:
    """`compose.serve(bot, adapter, events)` on an event loop in its own thread."""

    def __init__(self, parts: BotParts, adapter: ChatAdapter) -> None:
        self.parts = parts
        self.adapter = adapter
        self.loop: asyncio.AbstractEventLoop | None = None
        self._up = threading.Event()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="bot-loop", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by start() or stop()
            self._failure.append(e)
            self._up.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.create_task(serve(self.parts.bot, self.adapter, self.parts.events))
        ready = asyncio.create_task(self.adapter.wait_ready())  # type: ignore[attr-defined]
        done, _ = await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            self._failure.append(RuntimeError("the adapter did not become ready"))
        self._up.set()
        await task

    def start(self) -> BotRunner:
        self._thread.start()
        self._up.wait(20)
        if self._failure:
            raise self._failure[0]
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 15) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread.is_alive() and self.loop is not None and not self.loop.is_closed():
            try:
                self.call(self.adapter.stop(), timeout=30)
            except RuntimeError:  # the loop finished meanwhile
                pass
        self._thread.join(30)
        assert not self._thread.is_alive(), "the bot loop did not stop"
        if self._failure:
            raise self._failure[0]


@pytest.fixture
def runners() -> Iterator[list[BotRunner]]:
    """Runners started by a test are stopped (and their threads joined) at teardown."""
    started: list[BotRunner] = []
    yield started
    for r in started:
        r.stop()


@pytest.fixture
def start_slack(
    tmp_path: Path, slack_api: SlackApiStandIn, runners: list[BotRunner]
) -> Callable[..., tuple[BotParts, SlackAdapter]]:
    """`start_slack(mode="http", access=SLACK_ACCESS, **settings) -> (parts, adapter)`: a whole bot
    on the Slack adapter, talking to the stand-in, started and ready."""

    def start(
        mode: str = "http", access: str = SLACK_ACCESS, **settings: Any
    ) -> tuple[BotParts, SlackAdapter]:
        parts = make_bot(tmp_path / f"bot{len(runners)}", access)
        adapter = SlackAdapter(
            SlackSettings(
                bot_token=BOT_TOKEN,
                signing_secret=SIGNING_SECRET if mode == "http" else None,
                app_token=APP_TOKEN if mode == "socket" else None,
                mode=mode,  # type: ignore[arg-type]
                port=0,
                api_url=slack_api.base_url,
                **settings,
            )
        )
        parts.bot.groups = adapter.group_resolver(lambda: slack_groups_named(parts.store.current))
        runners.append(BotRunner(parts, adapter).start())
        return parts, adapter

    return start
