"""The loop caps a cluster at the larger of its requester's access limits and what an approver allowed
(`rayops.io/approved-limits`, written by the bot when it carries out an approved request)."""

from __future__ import annotations

from controller import keys
from controller.annotations import ApprovedLimits, encode_approved_limits
from controller.domain import GroupRef, SignalType
from controller.events import EventType
from tests.controller.conftest import Loop
from tests.controller.fakes import T0

PENDING = SignalType.PENDING_DEMAND
ACCESS = """\
apiVersion: rayops.io/v1alpha1
kind: AccessPolicy
metadata: {name: team}
spec:
  rules:
    - subjects: [{slackUser: U1}]
      namespaces: ["team-a"]
      profiles: ["*"]
      limits: {workersPerCluster: 2}
---
apiVersion: rayops.io/v1alpha1
kind: ClusterProfile
metadata: {name: small}
spec: {scalingPolicy: test}
"""
APPROVED_4 = encode_approved_limits(ApprovedLimits(4, 0, "k3j2mq7x", "slack:U9", T0))


def test_an_approved_cluster_is_not_clamped_below_its_approval(loop: Loop) -> None:
    (loop.policy_dir / "access.yaml").write_text(ACCESS)
    ann = {keys.ANN_REQUESTER: "slack:U1", keys.ANN_APPROVED_LIMITS: APPROVED_4}
    big = loop.backend.add("big", replicas=4, annotations=ann)
    loop.metrics.set(GroupRef("team-a", "big", "cpu"), PENDING, 4)  # demand keeps all four busy
    d = loop.tick().decision("cpu", "big")
    assert d.target == 4 and d.remove == ()
    loop.metrics.set(GroupRef("team-a", "big", "cpu"), PENDING, 9)  # more than approved
    d = loop.tick().decision("cpu", "big")
    assert d.target == 4
    assert any("approved workers 4 (request k3j2mq7x by slack:U9)" in r.message for r in d.reasons)
    loop.tick()
    loop.tick()
    assert loop.backend.replicas(big) == 4
    assert not loop.of_type(EventType.LIMIT_CLAMPED)


def test_without_the_approval_the_same_cluster_is_clamped_to_the_rule(loop: Loop) -> None:
    (loop.policy_dir / "access.yaml").write_text(ACCESS)
    for name, extra in (("plain", {}), ("mangled", {keys.ANN_APPROVED_LIMITS: '{"workers": "lots"}'})):
        ref = loop.backend.add(name, replicas=4, annotations={keys.ANN_REQUESTER: "slack:U1", **extra})
        loop.metrics.set(GroupRef("team-a", name, "cpu"), PENDING, 4)
        d = loop.tick().decision("cpu", name)
        assert d.target == 2 and len(d.remove) == 2, name
        assert any("workersPerCluster 2" in r.message for r in d.reasons), name
        assert loop.backend.replicas(ref) == 2


def test_an_approval_below_the_rule_changes_nothing(loop: Loop) -> None:
    (loop.policy_dir / "access.yaml").write_text(ACCESS)
    small = encode_approved_limits(ApprovedLimits(1, 0, "abcdefgh", "slack:U9", T0))
    loop.backend.add("tiny", annotations={keys.ANN_REQUESTER: "slack:U1", keys.ANN_APPROVED_LIMITS: small})
    loop.metrics.set(GroupRef("team-a", "tiny", "cpu"), PENDING, 5)
    assert loop.tick().decision("cpu", "tiny").target == 2
