"""What a signal means when every Ray node shares one machine (laptop mode).

Ray reports, for each node, the CPU utilization of the *host* it runs on. On Kubernetes a node is a pod
on its own share of a machine, so that is the node's own load. In laptop mode every local node is a
process tree on the same laptop: each reports how busy the laptop is (the editor, the browser, a test
suite), identical for all of them and unrelated to what Ray runs. Scaling workers on it would add
workers because the laptop is busy, and keep idle workers forever on a loaded machine.

So in laptop mode a policy's `utilization` of `CPU` is answered with Ray's *logical* CPU use of the
group (`logical:CPU`: the share of the workers' CPUs that tasks and actors hold, from `ray_resources`),
which is what the nodes themselves do. Other resources pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from controller.domain import GroupRef, Sample, SignalSpec, SignalType
from controller.metrics.base import FetchResult, MetricsSource, MetricTarget, Support

HOST_WIDE = {"CPU": "logical:CPU"}


def on_one_host(spec: SignalSpec) -> SignalSpec:
    """The signal to fetch for `spec` when all nodes share one host."""
    if spec.type == SignalType.UTILIZATION and (spec.resource or "CPU") in HOST_WIDE:
        return SignalSpec(SignalType.UTILIZATION, resource=HOST_WIDE[spec.resource or "CPU"])
    return spec


class OneHostSource:
    """A `MetricsSource` answering host-wide signals with their per-node logical counterparts."""

    def __init__(self, inner: MetricsSource) -> None:
        self.inner = inner
        self.name = inner.name

    def supports(self, spec: SignalSpec) -> Support:
        return self.inner.supports(on_one_host(spec))

    def fetch(
        self, targets: Sequence[MetricTarget], signals: Collection[SignalSpec], now: datetime
    ) -> FetchResult:
        asked = {spec: on_one_host(spec) for spec in signals}
        got = self.inner.fetch(targets, list(dict.fromkeys(asked.values())), now)
        samples: dict[GroupRef, dict[SignalSpec, Sample]] = {}
        for t in targets:
            samples[t.ref] = {spec: got.get(t.ref, fetched) for spec, fetched in asked.items()}
        return FetchResult(samples=samples, unplaced=got.unplaced, requests=got.requests)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
