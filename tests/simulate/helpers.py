"""Small traces and policies shared by the simulator tests, written out so each number can be checked
by hand."""

from __future__ import annotations

from pathlib import Path

from controller.policy.model import ScalingPolicy
from controller.simulate.policies import load_policies
from controller.simulate.trace import Trace, parse_trace

REPO = Path(__file__).resolve().parents[2]
AZURE = REPO / "tests" / "fixtures" / "traces" / "AzureLLMInferenceTrace_code.csv"
EXAMPLE_POLICIES = REPO / "policies"

# Two 60 s tasks at t=0; a 0-task row keeps the window open to t=300.
TWO_AT_ZERO = "timestamp,tasks,duration_s\n0,2,60\n299,0,1\n"
# One 10 s task at t=0 and one at t=200; window to t=400.
TWO_APART = "timestamp,tasks,duration_s\n0,1,10\n200,1,10\n399,0,1\n"
# Five 60 s tasks at t=0 (window ends at 60).
FIVE_AT_ZERO = "timestamp,tasks,duration_s\n0,5,60\n"
# Twenty 100 s tasks at t=0 (window ends at 100).
TWENTY_AT_ZERO = "timestamp,tasks,duration_s\n0,20,100\n"

PENDING_POLICY = """\
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata: {name: pending-only}
spec:
  minReplicas: 0
  maxReplicas: 10
  signals:
    - {name: pending, type: pendingDemand, resource: CPU}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 0
      policies: [{type: Percent, value: 100, periodSeconds: 15}]
"""

UTIL_POLICY = """\
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata: {name: util-and-pending}
spec:
  minReplicas: 1
  maxReplicas: 10
  signals:
    - {name: pending, type: pendingDemand, resource: CPU}
    - {name: util, type: utilization, resource: CPU, target: {averageUtilization: 70}}
"""

BOUNDS_POLICY = """\
apiVersion: rayops.io/v1alpha1
kind: ScalingPolicy
metadata: {name: bounds-mode}
spec:
  mode: bounds
  minReplicas: 0
  maxReplicas: 10
"""


def trace(text: str, name: str = "t") -> Trace:
    return parse_trace(text, source=name, name=name)


def policy(text: str, tmp: Path) -> ScalingPolicy:
    f = tmp / "p.yaml"
    f.write_text(text)
    (p,) = load_policies([f])
    return p


def example_policies() -> list[ScalingPolicy]:
    """The example policies in policies/ (ScalingPolicies only)."""
    return load_policies([EXAMPLE_POLICIES])
