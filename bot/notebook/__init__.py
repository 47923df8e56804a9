"""Request and watch Ray clusters from a notebook, with the same rules as chat (issue 9).

    from bot.notebook import RayopsSession

    session = RayopsSession.local()                 # laptop mode (or RayopsSession.kubernetes())
    cluster = session.request("demo", profile="cpu-default")
    cluster.wait_ready()
    cluster.indicator()                             # live status, refreshing in the background
    cluster.connect()                               # ray.init(address=cluster.address)
    ...
    cluster.why()                                   # the last scaling decisions and their reasons
    cluster.delete()

CodeFlare SDK is the model (`ClusterConfiguration`/`apply`/`status`/`details`/`wait_ready`, widgets);
rayops adds the autoscaling story, the reasons behind scaling and chat's access rules, quotas and
approvals. Importing this package needs neither a Kubernetes API server nor Ray: the Kubernetes
client, Ray and ipywidgets are imported only by the calls that use them. See docs/notebook.md.
"""

from __future__ import annotations

from bot.notebook.cluster import Answer, NotebookCluster, Why
from bot.notebook.errors import ApprovalPending, ClusterGone, RayopsError, Refused, SetupError
from bot.notebook.session import RayopsSession
from bot.notebook.snapshot import Snapshot

__all__ = [
    "Answer",
    "ApprovalPending",
    "ClusterGone",
    "NotebookCluster",
    "RayopsError",
    "RayopsSession",
    "Refused",
    "SetupError",
    "Snapshot",
    "Why",
]
