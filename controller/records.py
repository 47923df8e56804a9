"""The two annotations the loop writes on each cluster, and what counts as "changed".

`rayops.io/decision` (keys.ANN_DECISION): the last decision of every group. The top level is one
group's `Decision.to_dict()` (the one that changed the cluster, else the first group), so readers of
contracts.md section 3 that expect one decision (`decode_decision`, the bot's `why`) keep working;
`"groups"` carries the other groups' decisions in the same shape.

`rayops.io/state` (keys.ANN_STATE): `{"v": 1, "groups": {name: GroupState.to_dict()}}`, the decision
function's memory, so a restarted or newly elected controller continues without a jump.

Both are bounded by `keys.MAX_ANNOTATION_BYTES`: reasons lose their evidence data first, then their
messages are shortened (to 160, then 40 characters), then other groups' decisions are dropped; a
state that still does not fit keeps the groups that fit (the others restart from an empty state,
which only makes them less smooth).

"Changed" is what decides whether a tick writes at all (issue 6: a cluster whose decision did not
change gets no write). Reasons carry measured values and times that differ every tick, and the state
carries the time of the last tick, so neither is compared as text:
- a decision's *key* is what it decided: policy, mode, current, target, action, reason codes,
  workers to remove, bounds, dry run;
- a state's *signature* is what later decisions depend on: the values in the stabilization windows
  (not their times: a steady recommendation only moves its timestamp), the scale events, whether data
  is missing (capped at the policy's fallback threshold) and which budget buckets exist. A state whose
  signature did not change is not written; the last written one stays conservative (its entries are a
  subset of the window, never newer values), and budget time since its tick is charged on restart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from controller import keys
from controller.domain import Action, Decision
from controller.policy.model import ScalingPolicy
from controller.policy.state import GroupState

log = logging.getLogger("rayops.controller.records")

DecisionKey = tuple[Any, ...]
_STATE_VERSION = 1
_MESSAGE_LIMIT = 160


def decision_key(d: Decision) -> DecisionKey:
    return (
        d.ref.group,
        d.policy,
        d.mode,
        d.current,
        d.target,
        str(d.action),
        tuple(str(c) for c in d.codes),
        tuple(d.remove),
        d.min_replicas,
        d.max_replicas,
        d.dry_run,
    )


def cluster_key(decisions: Sequence[Decision]) -> tuple[DecisionKey, ...]:
    return tuple(sorted(decision_key(d) for d in decisions))


def primary(decisions: Sequence[Decision]) -> Decision:
    """The decision shown at the top level: the first that changes the cluster, else the first."""
    return next((d for d in decisions if d.action is not Action.HOLD), decisions[0])


# --- rayops.io/decision -------------------------------------------------------------------------


def encode_decisions(decisions: Sequence[Decision], limit: int = keys.MAX_ANNOTATION_BYTES) -> str:
    """The annotation text, at most `limit` bytes (see the module docstring for what is dropped)."""
    if not decisions:
        raise ValueError("no decisions to encode")
    top = primary(decisions)
    others = [d for d in decisions if d is not top]
    for shrink in (_full, _no_data, _short, _codes):
        doc = shrink(top)
        if others:
            doc["groups"] = {d.ref.group: shrink(d) for d in others}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        if len(text.encode()) <= limit:
            return text
    text = json.dumps(_codes(top), sort_keys=True, separators=(",", ":"))
    if len(text.encode()) <= limit:
        log.warning(
            "%s: decision annotation too large; other groups' decisions left out", top.ref.cluster_ref
        )
        return text
    return json.dumps({**_codes(top), "reasons": []}, sort_keys=True, separators=(",", ":"))


def _full(d: Decision) -> dict[str, Any]:
    return d.to_dict()


def _no_data(d: Decision) -> dict[str, Any]:
    doc = d.to_dict()
    doc["reasons"] = [{**r, "data": {}} for r in doc["reasons"]]
    return doc


def _short(d: Decision) -> dict[str, Any]:
    doc = _no_data(d)
    for r in doc["reasons"]:
        if len(r["message"]) > _MESSAGE_LIMIT:
            r["message"] = r["message"][: _MESSAGE_LIMIT - 1] + "…"
    return doc


def _codes(d: Decision) -> dict[str, Any]:
    doc = _no_data(d)
    for r in doc["reasons"]:
        r["message"] = r["message"][:40]
    return doc


def decode_decisions(text: str | None) -> list[Decision]:
    """Every group's decision from the annotation; [] when absent or unreadable."""
    if not text:
        return []
    try:
        doc = json.loads(text)
        out = [Decision.from_dict(doc)]
        for sub in (doc.get("groups") or {}).values():
            out.append(Decision.from_dict(sub))
        return out
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


# --- rayops.io/state ----------------------------------------------------------------------------


def encode_states(states: Mapping[str, GroupState], limit: int = keys.MAX_ANNOTATION_BYTES) -> str:
    groups: dict[str, Any] = {}
    for name in sorted(states):
        groups[name] = states[name].to_dict()
        text = json.dumps({"v": _STATE_VERSION, "groups": groups}, separators=(",", ":"))
        if len(text.encode()) > limit:
            del groups[name]
            log.warning("decision state of group %s left out: the state annotation is full", name)
    return json.dumps({"v": _STATE_VERSION, "groups": groups}, separators=(",", ":"))


def decode_states(text: str | None) -> dict[str, GroupState]:
    """Each group's saved state; groups missing or unreadable are left out (they start empty)."""
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(doc, dict) or doc.get("v") != _STATE_VERSION or not isinstance(doc.get("groups"), dict):
        return {}
    return {str(k): GroupState.from_dict(v) for k, v in doc["groups"].items() if isinstance(v, dict)}


def state_signature(state: GroupState, policy: ScalingPolicy | None) -> tuple[Any, ...]:
    cap = 1
    if policy is not None and policy.spec.on_missing_data.action == "fallback":
        cap = policy.spec.on_missing_data.after_failures
    return (
        tuple(v for _, v in state.up_history),
        tuple(v for _, v in state.down_history),
        state.events,
        min(state.failures, cap),
        state.bucket_ms,
        tuple(b[0] for b in state.buckets),
    )
