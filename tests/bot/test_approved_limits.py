"""An approved request leaves `rayops.io/approved-limits` on the cluster, and the controller's limits
honour it: the approved size is not clamped back to the requester's own limits on the next tick."""

from __future__ import annotations

import json
from pathlib import Path

from bot.adapters.base import ReplyStatus
from controller import keys
from controller.annotations import ApprovedLimits, decode_approved_limits
from controller.domain import ClusterRef
from controller.limits import limits_for
from tests.bot.conftest import ALICE, APPROVER, T0, fixture_policy_set, make_harness

BIG = ClusterRef("ray-nlp", "big")


def _rid(out) -> str:  # type: ignore[no-untyped-def]
    return str(out.notifications[0].reply.buttons[0].command.split()[1])


def test_an_approved_create_carries_the_approved_limits(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    rid = _rid(h.run(ALICE, "create big workers=6"))  # Alice may hold 4 workers per cluster
    h.clock.advance(minutes=3)
    out = h.run(APPROVER, f"approve {rid}")
    assert out.reply.status is ReplyStatus.OK, out.reply.text
    raw = h.backend.raw_annotations(BIG)[keys.ANN_APPROVED_LIMITS]
    assert json.loads(raw) == {
        "workers": 6,
        "gpus": 0,
        "request": rid,
        "by": "slack:U0APPROVER",
        "at": "2026-06-01T12:03:00+00:00",
    }
    # The controller reads the cluster as the bot left it: capped at 6, not at Alice's 4.
    [cluster] = [c for c in h.backend.list_clusters() if c.ref == BIG]
    limits = limits_for(cluster, fixture_policy_set())
    assert (limits.workers, limits.gpus, limits.approved) == (6, 0, decode_approved_limits(raw))


def test_a_create_within_the_limits_carries_none(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    assert h.run(ALICE, "create small workers=3").reply.status is ReplyStatus.OK
    assert keys.ANN_APPROVED_LIMITS not in h.backend.raw_annotations(ClusterRef("ray-nlp", "small"))
    [cluster] = h.backend.list_clusters()
    assert limits_for(cluster, fixture_policy_set()).workers == 4


def test_an_approved_scale_widens_the_approved_limits_and_never_narrows_them(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    first = _rid(h.run(ALICE, "create big workers=6"))
    assert h.run(APPROVER, f"approve {first}").reply.status is ReplyStatus.OK
    second = _rid(h.run(ALICE, "scale big 7"))
    assert h.run(APPROVER, f"approve {second}").reply.status is ReplyStatus.OK
    got = decode_approved_limits(h.backend.raw_annotations(BIG)[keys.ANN_APPROVED_LIMITS])
    assert got == ApprovedLimits(7, 0, second, "slack:U0APPROVER", T0)
    # A pin within what was approved needs no approver and leaves the approval as it was.
    assert h.run(ALICE, "scale big 5").reply.status is ReplyStatus.OK
    assert decode_approved_limits(h.backend.raw_annotations(BIG)[keys.ANN_APPROVED_LIMITS]) == got
