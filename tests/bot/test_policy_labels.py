"""`policy NAME` picks the ScalingPolicy as the controller does, `matchLabels` included: every backend's
`ClusterStatus` carries the cluster's labels."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.render import to_text
from controller import keys
from controller.backends.base import ClusterRequest, GroupStatus
from controller.backends.kuberay_read import cluster_status
from controller.backends.local import LocalBackend
from controller.backends.memory import MemoryBackend
from controller.domain import ClusterRef
from controller.policy.loader import load_policy_set
from tests.backends.drivers import CONTRACT_PROFILE, REQUESTER
from tests.bot.conftest import ALICE, POLICIES, make_harness

NLP_POLICY = """\
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata:
  name: nlp-team
spec:
  selector: {namespaces: ["*"], matchLabels: {team: nlp}}
  priority: 10
  maxReplicas: 3
  signals:
    - {name: pending-cpu, type: pendingDemand, resource: CPU}
"""
OPTED_IN = {keys.LABEL_MANAGED: keys.MANAGED_VALUE}


def test_policy_evaluates_match_labels(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    (policies / "nlp.yaml").write_text(NLP_POLICY)
    ps = load_policy_set(str(policies))
    backend = MemoryBackend(ps.cluster_profiles)
    group = [GroupStatus("workers", 1, 1, 0, 8, {"CPU": 2.0})]
    backend.add_cluster(ClusterRef("ray-nlp", "labelled"), group, labels={**OPTED_IN, "team": "nlp"})
    backend.add_cluster(ClusterRef("ray-nlp", "plain"), group, labels=OPTED_IN)
    h = make_harness(tmp_path, backend=backend, policy=lambda: ps)
    labelled = to_text(h.run(ALICE, "policy labelled").reply)
    assert "nlp-team: mode owner, 0 to 3 workers" in labelled, labelled
    plain = to_text(h.run(ALICE, "policy plain").reply)
    assert "cpu-default: mode owner, 0 to 8 workers" in plain, plain


def test_every_backend_reports_the_labels(tmp_path: Path) -> None:
    labels = {**OPTED_IN, "team": "nlp"}
    memory = MemoryBackend({})
    memory.add_cluster(ClusterRef("team-a", "m"), [], labels=labels)
    assert memory.get(ClusterRef("team-a", "m")).labels == labels
    rc = {"metadata": {"name": "k", "namespace": "team-a", "labels": labels}, "spec": {}}
    assert cluster_status(rc, [], None).labels == labels
    local = LocalBackend({CONTRACT_PROFILE.name: CONTRACT_PROFILE}, state_dir=tmp_path / "state")
    request = ClusterRequest(
        "l", keys.LOCAL_NAMESPACE, CONTRACT_PROFILE.name, REQUESTER, labels={"team": "nlp"}
    )
    status = local._status(local._plan(request))  # the record a create writes, before any process
    assert status.labels == {"team": "nlp", keys.LABEL_MANAGED_BY: keys.MANAGED_BY_VALUE}
