"""Route each signal to the source configured for it, and refuse at load time what nobody can give.

A deployment has up to three sources: Prometheus (utilization, PromQL), the Ray dashboard (pending
demand per shape) and, in laptop mode without Prometheus, the direct scrape of Ray's `/metrics`
(utilization). `CompositeSource` sends each signal to the first source, in the order given, that
supports it (or to the one named in `prefer` for its type), fetches the sources concurrently, and
merges their answers. `check_signals` is the load-time check of issue 4 point 5: a policy asking for a
signal that no configured source can give is refused when the policy set is loaded, with a message
naming the policy, the signal and why each source cannot give it, rather than failing every tick.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from controller.domain import ClusterRef, GroupRef, Sample, SignalSpec, SignalType
from controller.metrics.base import FetchResult, MetricsSource, MetricTarget, Support
from controller.metrics.demand import ShapeDemand

__all__ = ["CompositeSource", "check_signals"]


class CompositeSource:
    """A `MetricsSource` made of others; `prefer` maps a signal type to a source name."""

    name = "composite"

    def __init__(
        self, sources: Sequence[MetricsSource], prefer: Mapping[SignalType, str] | None = None
    ) -> None:
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be distinct, got {names}")
        self.sources = list(sources)
        self.prefer = dict(prefer or {})
        for t, n in self.prefer.items():
            if n not in names:
                raise ValueError(
                    f"prefer: {t} names source '{n}', which is not configured ({', '.join(names)})"
                )
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, len(self.sources)), thread_name_prefix="metrics"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def route(self, spec: SignalSpec) -> MetricsSource | None:
        """The source that will fetch `spec`, or None when no configured source can."""
        preferred = self.prefer.get(spec.type)
        for source in self.sources:
            if preferred is not None and source.name != preferred:
                continue
            if source.supports(spec):
                return source
        return None

    def capabilities(self) -> dict[SignalType, str]:
        """Which source serves each signal type (probed with a typical signal), for start-up logs."""
        probes = {
            SignalType.PENDING_DEMAND: SignalSpec(SignalType.PENDING_DEMAND, resource="CPU"),
            SignalType.UTILIZATION: SignalSpec(SignalType.UTILIZATION, resource="CPU"),
            SignalType.PROMQL: SignalSpec(SignalType.PROMQL, query="up"),
        }
        out = {}
        for t, spec in probes.items():
            source = self.route(spec)
            if source is not None:
                out[t] = source.name
        return out

    def supports(self, spec: SignalSpec) -> Support:
        if self.route(spec) is not None:
            return Support(True)
        if not self.sources:
            return Support(False, "no metrics source is configured")
        why = "; ".join(f"{s.name}: {s.supports(spec).reason or 'not chosen'}" for s in self.sources)
        preferred = self.prefer.get(spec.type)
        lead = f"the source configured for {spec.type} ({preferred}) cannot give it" if preferred else ""
        return Support(False, f"{lead + '; ' if lead else ''}{why}")

    def fetch(
        self, targets: Sequence[MetricTarget], signals: Collection[SignalSpec], now: datetime
    ) -> FetchResult:
        routed: dict[str, list[SignalSpec]] = {}
        samples: dict[GroupRef, dict[SignalSpec, Sample]] = {t.ref: {} for t in targets}
        for spec in dict.fromkeys(signals):
            source = self.route(spec)
            if source is None:
                reason = f"no configured source gives this signal ({self.supports(spec).reason})"
                for t in targets:
                    samples[t.ref][spec] = Sample.missing(reason, self.name)
            else:
                routed.setdefault(source.name, []).append(spec)
        by_name = {s.name: s for s in self.sources}
        futures = {
            name: self._executor.submit(by_name[name].fetch, targets, specs, now)
            for name, specs in routed.items()
        }
        unplaced: dict[ClusterRef, tuple[ShapeDemand, ...]] = {}
        requests = 0
        for name, fut in futures.items():
            result = fut.result()  # each source bounds its own time; a raise is a programming error
            requests += result.requests
            unplaced.update(result.unplaced)
            for ref, per_signal in result.samples.items():
                samples.setdefault(ref, {}).update(per_signal)
            for t in targets:  # a source that forgot a pair must not leave a hole
                for spec in routed[name]:
                    samples[t.ref].setdefault(spec, Sample.missing(f"{name} returned no sample", name))
        return FetchResult(samples=samples, unplaced=unplaced, requests=requests)


def _policies(policies: Any) -> Iterable[Any]:
    if hasattr(policies, "scaling_policies"):  # a loaded PolicySet
        return list(policies.scaling_policies.values())
    if isinstance(policies, Mapping):
        return list(policies.values())
    return list(policies)


def check_signals(policies: Any, source: MetricsSource) -> list[str]:
    """One error per (policy, signal) that `source` cannot give; empty when every signal is covered.

    `policies` is a PolicySet (its `scaling_policies`), a mapping or iterable of ScalingPolicy, or an
    iterable of SignalSpec. Meant for the policy loader: a set with any error here is refused whole.
    """
    errors: list[str] = []
    for item in _policies(policies):
        if isinstance(item, SignalSpec):
            support = source.supports(item)
            if not support:
                errors.append(
                    f"signal {_describe(item)}: no configured metrics source can give it: {support.reason}"
                )
            continue
        name = getattr(getattr(item, "metadata", None), "name", "?")
        for sig in item.spec.signals:
            spec = sig.spec()
            support = source.supports(spec)
            if not support:
                errors.append(
                    f"ScalingPolicy {name}: signal '{sig.name}' ({_describe(spec)}): no configured metrics "
                    f"source can give it: {support.reason}"
                )
    return errors


def _describe(spec: SignalSpec) -> str:
    if spec.type == SignalType.PROMQL:
        return f"promql {spec.query!r}"
    return f"{spec.type} {spec.resource or 'CPU'}"
