"""Settings from the environment the manifests set, and the bounded decision/state annotations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller import keys, records
from controller.backends.memory import decode_decision
from controller.domain import Action, Decision, GroupRef, Reason, ReasonCode
from controller.events import Event, EventType, MemoryEvents
from controller.policy.state import GroupState
from controller.scrub import Scrubber, ScrubbingSink
from controller.settings import ControllerSettings, secret_values

DEPLOY_ENV = Path(__file__).resolve().parents[2] / "deploy" / "base" / "settings.env"


def manifest_env() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in DEPLOY_ENV.read_text().splitlines() if "=" in line]
    return {k: v for k, v in pairs if not k.startswith("#")}


def test_the_manifests_settings_read_as_documented() -> None:
    env = manifest_env() | {"POD_NAME": "rayops-controller-7d9f-abc", "POD_NAMESPACE": "rayops"}
    s = ControllerSettings.from_env(env)
    assert s.backend == "kuberay" and s.loop.tick_seconds == 15 and not s.loop.paused
    assert s.policy_dir == Path("/etc/rayops/policies")
    assert s.namespaces == ("rayops",)  # empty RAYOPS_NAMESPACES: the pod's own namespace
    assert s.serve.port == 8080 and s.serve.host == "0.0.0.0"  # probes come from outside the pod
    assert s.leader.lease_name == "rayops-controller" and s.leader.identity == "rayops-controller-7d9f-abc"
    assert s.leader.namespace == "rayops" and s.prometheus.url is None


def test_laptop_defaults_and_flags_override_the_environment() -> None:
    s = ControllerSettings.from_env({"RAYOPS_BACKEND": "local", "RAYOPS_TICK_SECONDS": ""}, dry_run=True)
    assert s.loop.tick_seconds == 2 and s.serve.host == "127.0.0.1" and s.loop.dry_run
    s = ControllerSettings.from_env({"RAYOPS_TICK_SECONDS": "30", "RAYOPS_PAUSED": "true"}, tick_seconds=5)
    assert s.loop.tick_seconds == 5 and s.loop.paused
    assert ControllerSettings.from_env({}, http_port="off").serve.port is None
    with pytest.raises(ValueError, match="RAYOPS_PAUSED"):
        ControllerSettings.from_env({"RAYOPS_PAUSED": "maybe"})
    with pytest.raises(ValueError, match="unknown backend"):
        ControllerSettings.from_env({"RAYOPS_BACKEND": "nomad"})


def test_secret_values_come_from_token_files_variables_and_kubeconfig(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("prometheus-secret-value\n")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("users: [{name: u, user: {token: kube-secret-value}}]\n")
    env = {
        "RAYOPS_PROMETHEUS_TOKEN_FILE": str(token),
        "SLACK_BOT_TOKEN": "xoxb-123456",
        "KUBECONFIG": str(kubeconfig),
    }
    found = secret_values(ControllerSettings.from_env(env), env)
    assert {"prometheus-secret-value", "xoxb-123456", "kube-secret-value"} <= set(found)


def decision(group: str, reasons: int = 3, message: str = "m") -> Decision:
    return Decision(
        GroupRef("ns", "c", group),
        "p",
        "owner",
        1,
        2,
        Action.UP,
        tuple(Reason(ReasonCode.SIGNAL_PROPOSAL, message, {"value": i}) for i in range(reasons)),
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_decision_annotation_keeps_every_group_and_stays_within_the_limit() -> None:
    small = [decision("a"), decision("b")]
    text = records.encode_decisions(small)
    assert [d.ref.group for d in records.decode_decisions(text)] == ["a", "b"]
    assert decode_decision(text) == small[0]  # contracts.md section 3 readers see one decision
    huge = [decision(g, reasons=40, message="x" * 400) for g in "abc"]
    text = records.encode_decisions(huge)
    assert len(text.encode()) <= keys.MAX_ANNOTATION_BYTES
    assert records.cluster_key(records.decode_decisions(text)) == records.cluster_key(huge)


def test_state_annotation_round_trips_and_signature_ignores_time() -> None:
    state = GroupState(at_ms=1000, up_history=((900, 2),), down_history=((950, 3),), failures=2)
    later = GroupState(at_ms=5000, up_history=((4900, 2),), down_history=((4950, 3),), failures=3)
    assert records.decode_states(records.encode_states({"cpu": state})) == {"cpu": state}
    assert records.state_signature(state, None) == records.state_signature(later, None)
    assert records.state_signature(state, None) != records.state_signature(
        GroupState(at_ms=1000, down_history=((950, 4),)), None
    )
    assert records.decode_states("{not json") == {} and records.decode_states(json.dumps({"v": 99})) == {}


def test_scrubbing_masks_credentials_in_events() -> None:
    out = MemoryEvents()
    sink = ScrubbingSink(out, Scrubber(["s3cr3t-token-value"]))
    sink.publish(
        Event(
            EventType.FAILURE,
            "401 Authorization: Bearer abcdef123456 and s3cr3t-token-value, url?token=zzz999",
            datetime(2026, 1, 1, tzinfo=UTC),
            data={"cause": "Bearer abcdef123456"},
        )
    )
    [e] = out.events
    assert "abcdef123456" not in e.message and "s3cr3t" not in e.message and "zzz999" not in e.message
    assert e.data["cause"] == "Bearer [REDACTED]"


def test_laptop_cpu_utilization_is_rays_logical_use() -> None:
    """Every local node reports the laptop's CPU: the laptop source asks for Ray's logical use instead."""
    from controller.domain import SignalSpec, SignalType
    from controller.laptop import OneHostSource
    from controller.metrics.base import MetricTarget
    from tests.controller.fakes import TableMetrics

    class Recording(TableMetrics):
        def fetch(self, targets, signals, now):  # type: ignore[no-untyped-def]
            self.asked = list(signals)
            return super().fetch(targets, signals, now)

    inner = Recording()
    ref = GroupRef("local", "laptop", "cpu")
    inner.set(ref, SignalType.UTILIZATION, 40.0)
    cpu_util = SignalSpec(SignalType.UTILIZATION, resource="CPU")
    gpu_util = SignalSpec(SignalType.UTILIZATION, resource="GPU")
    got = OneHostSource(inner).fetch([MetricTarget(ref)], [cpu_util, gpu_util], datetime.now(UTC))
    assert inner.asked == [SignalSpec(SignalType.UTILIZATION, resource="logical:CPU"), gpu_util]
    assert got.get(ref, cpu_util).value == 40.0 and got.get(ref, gpu_util).value == 40.0
