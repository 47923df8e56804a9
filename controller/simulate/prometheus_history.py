"""Rebuild a real cluster's demand from Prometheus history, so a changed policy can be replayed against it.

`rayops simulate --from-prometheus URL --start T --end T` asks Prometheus (`/api/v1/query_range`, via
prometheus-api-client's `custom_query_range`) for the number of Ray tasks pending or running, summed
over the cluster: `sum(ray_tasks{State=~"PENDING_NODE_ASSIGNMENT|PENDING_ARGS_AVAIL|RUNNING"})`. The sum
matters: `ray_tasks` carries negative series from executors that decrement a state, so only the sum
over all series is the true count.

The approximation (printed in the report): the level L(t) sampled every `step` is taken as the demand,
and turned into tasks of `task_cpus` CPUs: when the level rises by n, n tasks arrive; when it falls by
n, the n most recently arrived tasks end (last in, first out, so a steady base load becomes long tasks
and fluctuations on top of it short ones). Replayed with zero wait this reproduces L(t) exactly. What
it cannot know: work shorter than one step, task shapes (ray_tasks has no resource label), and that a
task pending in the real cluster was waiting, not arriving (the demand includes the real cluster's
backlog). Gaps in the series hold the last level.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from controller.policy.durations import parse_duration
from controller.simulate.trace import SimulationInputError, Task, Trace

STATES = "PENDING_NODE_ASSIGNMENT|PENDING_ARGS_AVAIL|RUNNING"
MAX_POINTS = 10_000  # Prometheus refuses more than 11,000 points per series in one query


def default_query(cluster: str | None = None) -> str:
    """The demand query, optionally for one cluster (`NAMESPACE/NAME`, by the section 5 labels)."""
    from controller.keys import METRIC_LABEL_CLUSTER, METRIC_LABEL_NAMESPACE

    extra = ""
    if cluster:
        if cluster.count("/") != 1 or not all(cluster.split("/")):
            raise SimulationInputError(f"--cluster '{cluster}': expected NAMESPACE/NAME")
        ns, name = cluster.split("/")
        extra = f',{METRIC_LABEL_NAMESPACE}="{ns}",{METRIC_LABEL_CLUSTER}="{name}"'
    return f'sum(ray_tasks{{State=~"{STATES}"{extra}}})'


_REL = re.compile(r"^now(?:-(.+))?$")


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (UTC if no zone), Unix seconds, `now`, or `now-DURATION` (e.g. `now-7d`)."""
    s = text.strip()
    now = now or datetime.now(UTC)
    m = _REL.match(s)
    if m:
        if not m.group(1):
            return now
        try:
            return now - parse_duration(m.group(1))
        except ValueError as e:
            raise SimulationInputError(f"time '{text}': {e}") from None
    try:
        return datetime.fromtimestamp(float(s), UTC)
    except (ValueError, OverflowError):
        pass
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise SimulationInputError(
            f"time '{text}' is not ISO 8601 (2024-05-01T12:00:00Z), Unix seconds, now or now-7d"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def fetch_levels(
    url: str, query: str, start: datetime, end: datetime, step_s: float, timeout_s: float = 30.0
) -> list[tuple[float, float]]:
    """(Unix time, value) of the query's single series over [start, end], in chunks Prometheus accepts."""
    from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
    from requests.exceptions import RequestException
    from urllib3.util.retry import Retry

    # no retries: a Prometheus that is down should be reported at once, not after a back-off
    prom = PrometheusConnect(
        url=url.rstrip("/"), disable_ssl=True, retry=Retry(total=0), timeout=round(timeout_s)
    )
    out: dict[float, float] = {}
    chunk = timedelta(seconds=step_s * MAX_POINTS)
    at = start
    try:
        while at <= end:
            stop = min(at + chunk, end)
            try:
                result = prom.custom_query_range(query, at, stop, f"{step_s:g}s")
            except PrometheusApiClientException as e:
                raise SimulationInputError(f"Prometheus at {url} refused the query: {_why(e)}") from None
            except RequestException as e:
                raise SimulationInputError(f"cannot reach Prometheus at {url}: {_short(e)}") from None
            except (ValueError, KeyError, TypeError) as e:
                raise SimulationInputError(f"Prometheus at {url} gave an unexpected answer: {e}") from None
            series = [r for r in result if isinstance(r, dict)] if isinstance(result, list) else None
            if series is None:
                raise SimulationInputError(f"Prometheus at {url} gave an unexpected answer (no result list)")
            if len(series) > 1:
                labels = ", ".join(json.dumps(s.get("metric", {}), sort_keys=True) for s in series[:3])
                raise SimulationInputError(
                    f"the query returned {len(series)} series ({labels}...); it must return one: "
                    "aggregate with sum(...) or pick one cluster with --cluster"
                )
            for s in series:
                for ts, val in s.get("values", []):
                    out[float(ts)] = float(val)
            at = stop + timedelta(seconds=step_s)
    finally:
        prom.close()
    if not out:
        raise SimulationInputError(
            f"the query returned no data between {start.isoformat()} and {end.isoformat()}: {query}"
        )
    return sorted(out.items())


def _why(e: Exception) -> str:
    text = str(e)
    m = re.search(r"b'(\{.*\})'", text)
    if m:
        try:
            body = json.loads(m.group(1))
            return f"{text.split(' (')[0]}: {body.get('error', body)}"
        except ValueError:
            pass
    return text[:300]


def _short(e: Exception) -> str:
    text = str(e)
    for hint in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if hint in text:
            return hint
    return text[:200]


def levels_to_tasks(
    levels: Sequence[tuple[float, float]], start_unix: float, end_s: float, task_cpus: float = 1.0
) -> list[Task]:
    """Tasks whose zero-wait concurrency is the level series (last in, first out; see the module doc)."""
    open_: list[float] = []
    spans: list[tuple[float, float]] = []
    last = 0
    for ts, val in levels:
        t = ts - start_unix
        if t > end_s:
            break
        if not math.isfinite(val):
            continue  # a gap: hold the last level
        level = max(0, round(val))
        while level > last:
            open_.append(max(t, 0.0))
            last += 1
        while level < last:
            s = open_.pop()
            if t > s:
                spans.append((s, t - s))
            last -= 1
    for s in open_:
        if end_s > s:
            spans.append((s, end_s - s))
    spans.sort(key=lambda x: x[0])
    return [Task(s, d, task_cpus, 0.0, 0) for s, d in spans]


def trace_from_prometheus(
    url: str,
    start: datetime,
    end: datetime,
    step: str = "15s",
    query: str | None = None,
    cluster: str | None = None,
    task_cpus: float = 1.0,
    timeout_s: float = 30.0,
) -> Trace:
    if query and cluster:
        raise SimulationInputError(
            "--cluster applies to the default query; put the labels in --query instead"
        )
    try:
        step_s = parse_duration(step).total_seconds()
    except ValueError as e:
        raise SimulationInputError(f"--step: {e}") from None
    if step_s <= 0:
        raise SimulationInputError("--step must be longer than 0")
    if end <= start:
        raise SimulationInputError(f"--end {end.isoformat()} is not after --start {start.isoformat()}")
    q = query or default_query(cluster)
    levels = fetch_levels(url, q, start, end, step_s, timeout_s)
    end_s = (end - start).total_seconds()
    tasks = levels_to_tasks(levels, start.timestamp(), end_s, task_cpus)
    note = (
        f"demand rebuilt from Prometheus {url}: {q} every {step}; level rises = arrivals, falls = the latest "
        f"tasks ending (LIFO), {task_cpus:g} CPU per task; work shorter than a step is invisible"
    )
    name = f"prometheus-{start.strftime('%Y%m%dT%H%M')}"
    return Trace(name=name, tasks=tuple(tasks), end_s=end_s, start=start, source="prometheus", notes=(note,))
