"""The whole bot on KubeRay, as `rayops bot run --backend kuberay` wires it, against the Kubernetes stand-in.

`bot_session` is one scripted session that uses every Kubernetes call the bot's code makes: chat commands
from create to release, an over-quota request stored as a ConfigMap and approved after a restart, two
approvers racing, the global switch, approval expiry and pruning, notifications from the controller's
Events. It asserts what each step must do, and it is the bot's half of the RBAC check: every request goes
out with the bot's token, so `server.resource_requests(BOT_IDENTITY)` after it is exactly what the bot's
Role must grant (tests/deploy/test_rbac.py runs it on a fresh stand-in).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.adapters.base import Notification, ReplyStatus
from bot.authz import Identity
from bot.commands.context import Outcome
from bot.compose import Runtime, build_runtime
from bot.kube_store import APPROVAL_SELECTOR, LABEL_APPROVAL_STATE, ConfigMapApprovalStore
from bot.render import to_text
from bot.settings import BotSettings
from controller import keys
from controller.annotations import decode_approved_limits, decode_pin
from controller.backends.kube_api import KubeApi, RetryPolicy
from controller.backends.kuberay_events import KubeEventSink
from controller.domain import ClusterRef
from controller.events import Event, EventType
from controller.pause import ConfigMapPause
from controller.policy.loader import PolicyStore
from tests.bot.conftest import ALICE, APPROVER, OPS, POLICIES
from tests.harness.kube import BOT_TOKEN, CONTROLLER_TOKEN, KUBE_TOKENS
from tests.standins.kube_api import KubeApiServer
from tests.standins.kuberay_operator import FakeKubeRayOperator

BOT_IDENTITY = KUBE_TOKENS[BOT_TOKEN]
CONTROLLER_IDENTITY = KUBE_TOKENS[CONTROLLER_TOKEN]
TEAM = "ray-nlp"  # the managed namespace (RAYOPS_NAMESPACES)
HOME = "rayops"  # rayops' own namespace (POD_NAMESPACE): the global switch lives here
FAST = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05, read_timeout_s=5.0)
BOT_ENV = {
    "RAYOPS_BOT_BACKEND": "kuberay",
    "RAYOPS_NAMESPACES": TEAM,
    "POD_NAMESPACE": HOME,
    "RAYOPS_POLICY_DIR": str(POLICIES),
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class BotOnKube:
    """One bot process: its runtime (built by `bot.compose.build_runtime`, as `rayops bot run` does)."""

    runtime: Runtime
    posted: list[Notification]

    def run(self, who: Identity, text: str, status: ReplyStatus | None = ReplyStatus.OK) -> Outcome:
        out = self.runtime.bot.execute(who, text, channel="C0CHAN")
        self.posted.extend(out.notifications)
        if status is not None:
            assert out.reply.status is status, f"{text}: {out.reply.status}: {to_text(out.reply)}"
        return out


def start_bot(server: KubeApiServer, state_dir: Path, clock: Clock) -> BotOnKube:
    """A bot process with the bot's own token (a new call is a restart: nothing kept in memory)."""
    settings = BotSettings.from_env({**BOT_ENV, "RAYOPS_STATE_DIR": str(state_dir)})
    assert (settings.namespaces, settings.rayops_namespace, settings.default_namespace) == (
        (TEAM,),
        HOME,
        TEAM,
    )
    store = PolicyStore(str(settings.policy_dir))
    store.reload()
    runtime = build_runtime(settings, store, api=KubeApi(server.client(BOT_TOKEN), FAST))
    runtime.bot.clock = clock
    return BotOnKube(runtime, [])


def _rc(server: KubeApiServer, name: str, namespace: str = TEAM) -> dict[str, Any]:
    rc = server.get_obj("rayclusters", namespace, name)
    assert rc is not None, f"no RayCluster {namespace}/{name}"
    return rc


def _ann(server: KubeApiServer, name: str) -> dict[str, str]:
    return dict(_rc(server, name)["metadata"].get("annotations") or {})


def _replicas(server: KubeApiServer, name: str) -> list[int]:
    return [int(g["replicas"]) for g in _rc(server, name)["spec"]["workerGroupSpecs"]]


def _cluster_creates(server: KubeApiServer) -> int:
    return sum(
        1 for r in server.resource_requests(BOT_IDENTITY) if (r.verb, r.resource) == ("create", "rayclusters")
    )


def _request_id(out: Outcome) -> str:
    return str(out.notifications[0].reply.buttons[0].command.split()[1])


def _approval_configmaps(server: KubeApiServer, namespace: str = TEAM) -> dict[str, dict[str, Any]]:
    return {cm["metadata"]["name"]: cm for cm in server.list_objs("configmaps", namespace, APPROVAL_SELECTOR)}


def bot_session(server: KubeApiServer, operator: FakeKubeRayOperator, tmp: Path) -> None:
    """The scripted session; see the module docstring. Raises AssertionError on any wrong step."""
    clock = Clock()
    bot = start_bot(server, tmp / "state", clock)
    controller_api = KubeApi(server.client(CONTROLLER_TOKEN), FAST)

    # --- a cluster's life through chat --------------------------------------------------------
    out = bot.run(ALICE, "create demo workers=2")
    assert "Creating demo in ray-nlp" in out.reply.text
    rc = _rc(server, "demo")
    assert rc["metadata"]["labels"][keys.LABEL_MANAGED_BY] == keys.MANAGED_BY_VALUE
    assert rc["metadata"]["annotations"][keys.ANN_REQUESTER] == "slack:U0ALICE"
    assert keys.ANN_APPROVED_LIMITS not in rc["metadata"]["annotations"]  # within Alice's limits
    operator.reconcile_all()
    listed = to_text(bot.run(ALICE, "list").reply)
    assert "demo" in listed and "READY" in listed, listed
    status = bot.run(ALICE, "status demo")
    assert status.reply.text == "demo in ray-nlp: READY", status.reply.text
    connect = bot.run(ALICE, "connect demo")
    assert {f.label for f in connect.reply.fields} >= {"Ray client", "Dashboard"}

    before = _replicas(server, "demo")
    bot.run(ALICE, "scale demo 3")
    pin = decode_pin(_ann(server, "demo")[keys.ANN_MANUAL_REPLICAS])
    assert pin is not None and (pin.group, pin.replicas, pin.by) == ("workers", 3, "slack:U0ALICE")
    assert _replicas(server, "demo") == before, "the bot pins; it never writes replicas"
    bot.run(ALICE, "pause demo")
    assert _ann(server, "demo")[keys.ANN_PAUSED] == "true"
    bot.run(ALICE, "resume demo")
    assert not {keys.ANN_PAUSED, keys.ANN_MANUAL_REPLICAS} & set(_ann(server, "demo"))
    expiry = _ann(server, "demo")[keys.ANN_EXPIRES_AT]
    bot.run(ALICE, "extend demo 2h")
    assert _ann(server, "demo")[keys.ANN_EXPIRES_AT] > expiry
    assert _replicas(server, "demo") == before

    # --- the controller's Events: notifications and `why` -----------------------------------------
    assert bot.runtime.events.poll() == []
    KubeEventSink(controller_api, HOME, "controller-0").publish(
        Event(
            EventType.SCALED_UP,
            "workers 2 -> 3: 1 CPU task pending",
            datetime.now(UTC),  # what the controller stamps; the source reads only newer than its start
            ClusterRef(TEAM, "demo"),
            requester="slack:U0ALICE",
            data={"group": "workers", "current": 2, "target": 3},
        )
    )
    [seen] = bot.runtime.events.poll()
    assert seen.type is EventType.SCALED_UP and seen.requester == "slack:U0ALICE"
    why = bot.run(ALICE, "why demo").reply.text
    assert "workers 2 -> 3" in why, why

    # --- over the limits: a ConfigMap approval, a restart, an approval ------------------------------
    pending = bot.run(ALICE, "create big workers=6", ReplyStatus.PENDING)  # Alice may hold 4 workers
    rid = _request_id(pending)
    name = ConfigMapApprovalStore.name_for(rid)
    cm = _approval_configmaps(server)[name]
    assert cm["metadata"]["labels"][LABEL_APPROVAL_STATE] == "pending"
    assert json.loads(cm["data"]["request.json"])["command"] == "create big workers=6"
    assert server.get_obj("rayclusters", TEAM, "big") is None

    bot = start_bot(server, tmp / "state-after-restart", clock)  # a new pod: no local state at all
    assert rid in to_text(bot.run(APPROVER, "pending").reply)
    bot.run(APPROVER, f"approve {rid}")
    approved = decode_approved_limits(_ann(server, "big")[keys.ANN_APPROVED_LIMITS])
    assert approved is not None
    assert (approved.workers, approved.gpus, approved.request, approved.by) == (6, 0, rid, "slack:U0APPROVER")
    stored = json.loads(_approval_configmaps(server)[name]["data"]["request.json"])
    assert (stored["state"], stored["decided_by"]) == ("approved", "slack:U0APPROVER")
    again = bot.run(APPROVER, f"approve {rid}", ReplyStatus.ERROR)
    assert "already approved by slack:U0APPROVER" in again.reply.text

    # --- two bot replicas approve the same request at once: it runs once ----------------------------
    rid2 = _request_id(bot.run(ALICE, "create race workers=5", ReplyStatus.PENDING))
    other = start_bot(server, tmp / "state-other", clock)
    creates_before = _cluster_creates(server)
    results: list[Outcome] = []
    barrier = threading.Barrier(2)

    def approve(b: BotOnKube) -> Callable[[], None]:
        def go() -> None:
            barrier.wait()
            results.append(b.run(APPROVER, f"approve {rid2}", status=None))

        return go

    threads = [threading.Thread(target=approve(b)) for b in (bot, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(str(r.reply.status) for r in results) == ["error", "ok"], [r.reply.text for r in results]
    assert _cluster_creates(server) == creates_before + 1, "the approved command ran exactly once"
    assert _ann(server, "race")[keys.ANN_REQUESTER] == "slack:U0ALICE"

    # --- the global switch, as the controller reads it ----------------------------------------------
    switch = ConfigMapPause(controller_api, HOME)
    assert not switch.read().paused
    bot.run(OPS, "pause-all")
    state = switch.read()
    assert state.paused and state.by == "slack:U0OPS", state
    assert "paused globally" in to_text(bot.run(ALICE, "status demo").reply)
    bot.run(OPS, "resume-all")
    assert not switch.read().paused

    # --- delete and release, each confirmed ---------------------------------------------------------
    bot.run(ALICE, "delete demo", ReplyStatus.CONFIRM)
    assert server.get_obj("rayclusters", TEAM, "demo") is not None
    bot.run(ALICE, "confirm")
    assert server.get_obj("rayclusters", TEAM, "demo") is None
    legacy = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {
            "name": "legacy",
            "namespace": TEAM,
            "labels": {keys.LABEL_MANAGED: keys.MANAGED_VALUE, "team": "nlp"},
            "annotations": {keys.ANN_PAUSED: "true"},
        },
        "spec": dict(_rc(server, "big")["spec"]),
    }
    server.put(legacy)
    bot.run(OPS, "release legacy", ReplyStatus.CONFIRM)
    bot.run(OPS, "confirm")
    meta = _rc(server, "legacy")["metadata"]
    assert keys.LABEL_MANAGED not in meta["labels"] and meta["labels"]["team"] == "nlp"
    assert not any(k.startswith(keys.PREFIX) for k in meta.get("annotations") or {})

    # --- a namespace rayops does not manage: refused before any request (no Role grants it there) ---
    calls = len(server.resource_requests(BOT_IDENTITY))
    refused = bot.run(ALICE, "create g namespace=ray-gpu profile=gpu gpus=2", ReplyStatus.ERROR)
    assert "rayops does not manage namespace ray-gpu" in refused.reply.text
    assert bot.run(ALICE, "status g namespace=ray-gpu", ReplyStatus.ERROR).reply.text.startswith("no cluster")
    assert len(server.resource_requests(BOT_IDENTITY)) == calls  # nothing asked where nothing is granted

    # --- a denied request: the requester is told -----------------------------------------------------
    rid4 = _request_id(bot.run(ALICE, "create g2 workers=5", ReplyStatus.PENDING))
    denied = bot.run(APPROVER, f"deny {rid4} not this week")
    assert [n.to.id for n in denied.notifications] == ["U0ALICE"]

    # --- an unanswered request expires; decided ones are pruned a week later ------------------------
    rid3 = _request_id(bot.run(ALICE, "create huge workers=7", ReplyStatus.PENDING))
    clock.advance(hours=3)  # requestExpiry: 2h in the fixture policy
    notes = bot.runtime.bot.expire_requests()
    assert [n.to.id for n in notes] == ["U0ALICE"] and "expired without a decision" in notes[0].reply.text
    expired = _approval_configmaps(server)[ConfigMapApprovalStore.name_for(rid3)]
    assert expired["metadata"]["labels"][LABEL_APPROVAL_STATE] == "expired"
    assert bot.runtime.bot.expire_requests() == []  # told once
    clock.advance(days=8)
    bot.runtime.bot.expire_requests()
    assert _approval_configmaps(server) == {}
    for b in (bot, other):
        b.runtime.close()
