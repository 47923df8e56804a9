"""The shared annotation codec (`controller/annotations.py`) and who may import it from where.

Every backend and the bot read what another part wrote, so the codec lives in one pure module. These
tests pin its encodings and keep the dependency rule: no real backend, no controller module and no bot
module takes codec functions from the in-memory test backend.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from controller import annotations, keys
from controller.backends.base import ClusterRequest
from controller.backends.kuberay_events import KubeEventSink
from controller.backends.local import LocalBackend
from controller.backends.memory import MemoryBackend
from controller.backends.render import render_raycluster
from controller.domain import ManualPin
from controller.events import Event, EventType
from tests.backends.drivers import CONTRACT_PROFILE, REQUESTER

REPO = Path(__file__).resolve().parents[2]
CODEC = {"encode_time", "decode_time", "encode_pin", "decode_pin", "decode_decision"}
NAMES = {"cluster_name_problem", "namespace_problem"}


def _imports_from(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == module
        for alias in node.names
    }


def test_no_module_takes_the_codec_from_the_memory_backend() -> None:
    offenders = {}
    for package in ("controller", "bot"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name == "memory.py" and path.parent.name == "backends":
                continue
            taken = _imports_from(path, "controller.backends.memory") & (CODEC | NAMES)
            if taken:
                offenders[str(path.relative_to(REPO))] = sorted(taken)
    assert offenders == {}


def test_the_codec_is_pure() -> None:
    tree = ast.parse((REPO / "controller" / "annotations.py").read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "json", "dataclasses", "datetime", "typing", "controller.domain"}


def test_times_are_utc_whole_seconds_and_read_back_with_a_zone() -> None:
    at = datetime(2026, 11, 26, 13, 0, 5, 999, tzinfo=timezone(timedelta(hours=1)))
    text = annotations.encode_time(at)
    assert text == "2026-11-26T12:00:05+00:00"
    assert annotations.decode_time(text) == at.replace(microsecond=0)
    assert annotations.decode_time("2026-11-26T12:00:05") == datetime(2026, 11, 26, 12, 0, 5, tzinfo=UTC)
    assert annotations.decode_time("tomorrow") is None
    assert annotations.decode_time(None) is None


def test_a_pin_round_trips_and_a_mangled_one_is_ignored() -> None:
    pin = ManualPin("cpu", 3, datetime(2026, 11, 26, 14, 0, tzinfo=UTC), "slack:U1")
    assert annotations.decode_pin(annotations.encode_pin(pin)) == pin
    for bad in ('{"group": "cpu", "replicas": -1}', '{"group": 1, "replicas": 2}', "[1]", "{", ""):
        assert annotations.decode_pin(bad) is None, bad


def test_the_memory_backend_still_re_exports_the_codec() -> None:
    from controller.backends import memory

    assert all(getattr(memory, name) is getattr(annotations, name) for name in CODEC)


def test_kubernetes_events_carry_the_typed_event_under_the_key_in_keys() -> None:
    assert keys.EVENT_ANNOTATION == "rayops.io/event"
    assert keys.EVENT_ANNOTATION not in keys.ALL_ANNOTATIONS  # on Events, never on RayClusters
    sink = KubeEventSink(None, "rayops", "controller-0")  # type: ignore[arg-type]  # body only: no API call
    event = Event(EventType.SCALED_UP, "up", datetime(2026, 11, 26, tzinfo=UTC))
    body = sink.event_body(event)
    assert set(body["metadata"]["annotations"]) == {keys.EVENT_ANNOTATION}


# --- create annotations (an approval's approved-limits), honoured by all three backends ----------


def _request_with_annotations(namespace: str) -> ClusterRequest:
    extra = {keys.ANN_APPROVED_LIMITS: '{"workers": 3, "gpus": 0}', keys.ANN_REQUESTER: "slack:MALLORY"}
    return ClusterRequest("big", namespace, CONTRACT_PROFILE.name, REQUESTER, annotations=extra)


def _check_created_annotations(ann: Mapping[str, str]) -> None:
    assert ann[keys.ANN_APPROVED_LIMITS] == '{"workers": 3, "gpus": 0}'
    assert ann[keys.ANN_REQUESTER] == REQUESTER, "rayops' own keys win over the request's"


def test_kuberay_creates_with_the_request_annotations() -> None:
    body = render_raycluster(CONTRACT_PROFILE, _request_with_annotations("team-a"), datetime.now(UTC))
    _check_created_annotations(body["metadata"]["annotations"])


def test_memory_creates_with_the_request_annotations() -> None:
    backend = MemoryBackend({CONTRACT_PROFILE.name: CONTRACT_PROFILE})
    _check_created_annotations(backend.create(_request_with_annotations("team-a")).annotations)


def test_local_plans_the_request_annotations(tmp_path: Path) -> None:
    """The record a local create writes before starting any process (no Ray needed to check it)."""
    backend = LocalBackend({CONTRACT_PROFILE.name: CONTRACT_PROFILE}, state_dir=tmp_path)
    _check_created_annotations(backend._plan(_request_with_annotations(keys.LOCAL_NAMESPACE)).annotations)


def test_approved_limits_round_trip_widen_and_refuse_what_is_mangled() -> None:
    at = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    approved = annotations.ApprovedLimits(6, 1, "k3j2mq7x", "slack:U9", at)
    assert annotations.decode_approved_limits(annotations.encode_approved_limits(approved)) == approved
    later = annotations.ApprovedLimits(4, 2, "abcdefgh", "slack:U8", at)
    assert approved.widened(later) == annotations.ApprovedLimits(6, 2, "abcdefgh", "slack:U8", at)
    for bad in (
        '{"workers": -1}',
        '{"workers": true}',
        '{"gpus": 1}',
        '{"workers": 2, "gpus": "x"}',
        "[",
        "",
    ):
        assert annotations.decode_approved_limits(bad) is None, bad
    assert keys.ANN_APPROVED_LIMITS in keys.ALL_ANNOTATIONS  # so `release` removes it with the others
