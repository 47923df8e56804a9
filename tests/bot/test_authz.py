"""Authorization: refusals say why and change nothing; the AccessPolicy model; group subjects."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from bot.adapters.base import IncomingCommand, Platform, ReplyStatus
from bot.authz import AccessView, Identity, Limits, over_limits
from controller.backends.memory import MemoryBackend
from controller.domain import ClusterRef
from controller.policy.model import AccessPolicy
from tests.bot.conftest import (
    ALICE,
    APPROVER,
    BOB,
    MATRIX_ALICE,
    OPS,
    STRANGER,
    Harness,
    fixture_policy_set,
    make_harness,
)


def refused(h: Harness, who: Identity, text: str, says: str) -> None:
    before = h.backend.snapshot()
    pending_before = h.approvals.list(None)
    out = h.run(who, text)
    assert out.reply.status is ReplyStatus.REFUSED, out.reply.text
    assert says in out.reply.text, out.reply.text
    assert out.reply.text.endswith("Nothing was changed.")
    assert h.backend.snapshot() == before
    assert h.approvals.list(None) == pending_before
    assert out.notifications == ()


@pytest.fixture
def with_demo(h: Harness) -> Harness:
    assert h.run(ALICE, "create demo").reply.status is ReplyStatus.OK
    return h


@pytest.mark.parametrize(
    "text", ["list", "create x", "status demo", "delete demo", "approve abcdefgh", "confirm", "pause-all"]
)
def test_an_unknown_user_is_refused_with_their_id(with_demo: Harness, text: str) -> None:
    refused(with_demo, STRANGER, text, "I don't know you (slack:U0NOBODY)")
    assert "Ask DevOps to add `slack:U0NOBODY`" in with_demo.run(STRANGER, text).reply.text


def test_an_unknown_user_may_still_ask_for_help_and_whoami(h: Harness) -> None:
    assert h.run(STRANGER, "help").reply.status is ReplyStatus.OK
    me = h.run(STRANGER, "whoami")
    assert me.reply.status is ReplyStatus.OK and "slack:U0NOBODY" in me.reply.text


def test_namespace_not_allowed(h: Harness) -> None:
    refused(
        h,
        ALICE,
        "create x namespace=kube-system",
        "you may not use namespace kube-system (yours: ray-nlp, ray-gpu)",
    )
    refused(h, ALICE, "list namespace=kube-system", "you may not use namespace kube-system")
    h.run(OPS, "create secret namespace=kube-system")
    refused(h, ALICE, "status kube-system/secret", "you may not use namespace kube-system")


def test_a_cluster_in_a_namespace_you_cannot_see_does_not_exist_for_you(h: Harness) -> None:
    h.run(OPS, "create hidden namespace=kube-system")
    out = h.run(ALICE, "delete hidden")
    assert (
        out.reply.status is ReplyStatus.ERROR and "no cluster named hidden that you can see" in out.reply.text
    )
    assert h.backend.exists(ClusterRef("kube-system", "hidden"))


def test_profile_not_allowed(h: Harness) -> None:
    refused(h, ALICE, "create x profile=gpu", "you may not use profile gpu in ray-nlp (allowed: small)")
    refused(h, BOB, "create x profile=gpu namespace=ray-gpu", "you may not use namespace ray-gpu")


def test_only_the_requester_or_devops_change_a_cluster(with_demo: Harness) -> None:
    h = with_demo
    for text in ("delete demo", "scale demo 2", "extend demo 1h", "pause demo", "resume demo"):
        refused(h, BOB, text, "only its requester, slack:U0ALICE, or DevOps may change demo")
    assert h.run(BOB, "status demo").reply.status is ReplyStatus.OK  # reading is fine
    assert h.run(OPS, "pause demo").reply.status is ReplyStatus.OK


def test_devops_commands(with_demo: Harness) -> None:
    refused(with_demo, ALICE, "pause-all", "`pause-all` is for DevOps only")
    refused(with_demo, ALICE, "resume-all", "`resume-all` is for DevOps only")
    refused(with_demo, ALICE, "release demo", "`release` is for DevOps only")


def test_a_non_approver_cannot_approve(h: Harness) -> None:
    rid = h.run(ALICE, "create big workers=6").notifications[0].reply.buttons[0].command.split()[1]
    refused(h, BOB, f"approve {rid}", "only approvers may approve or deny requests")
    refused(h, BOB, f"deny {rid}", "only approvers")
    refused(h, ALICE, f"approve {rid}", "only approvers")


def test_an_approver_cannot_approve_their_own_request(h: Harness) -> None:
    out = h.run(OPS, "create big workers=20 namespace=ray-nlp")
    assert out.reply.status is ReplyStatus.ERROR  # the profile's own bound: 8
    for i in range(10):  # Ops may have 10 clusters
        assert h.run(OPS, f"create c{i} namespace=ray-nlp").reply.status is ReplyStatus.OK
    pending = h.run(OPS, "create eleventh namespace=ray-nlp")
    assert pending.reply.status is ReplyStatus.PENDING, pending.reply.text
    rid = pending.notifications[0].reply.buttons[0].command.split()[1]
    refused(h, OPS, f"approve {rid}", "you cannot approve your own request")
    assert h.run(APPROVER, f"approve {rid}").reply.status is ReplyStatus.OK


def test_only_the_person_who_asked_can_confirm(with_demo: Harness) -> None:
    h = with_demo
    ask = h.run(ALICE, "delete demo")
    press = ask.reply.buttons[0].command
    out = h.run(OPS, press)  # DevOps may delete demo, but may not confirm Alice's delete
    assert out.reply.status is ReplyStatus.REFUSED
    assert "Only slack:U0ALICE, who asked, can confirm `delete demo`" in out.reply.text
    assert h.backend.exists(ClusterRef("ray-nlp", "demo"))
    assert h.run(ALICE, press).reply.status is ReplyStatus.OK


def test_a_button_pressed_twice_acts_once(with_demo: Harness) -> None:
    h = with_demo
    rid = h.run(ALICE, "create big workers=6").notifications[0].reply.buttons[0].command.split()[1]
    first = h.run(APPROVER, f"approve {rid}")
    second = h.run(APPROVER, f"approve {rid}")
    assert first.reply.status is ReplyStatus.OK
    assert (
        second.reply.status is ReplyStatus.ERROR
        and "already approved by slack:U0APPROVER" in second.reply.text
    )
    assert [c for c in h.backend.calls if c == ("create", "ray-nlp/big")] == [("create", "ray-nlp/big")]


def test_a_right_lost_before_confirming_still_refuses(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ps = fixture_policy_set()
    current = {"ps": ps}
    h = make_harness(tmp_path, policy=lambda: current["ps"])
    h.run(ALICE, "create demo")
    h.run(ALICE, "delete demo")
    from dataclasses import replace
    from types import MappingProxyType

    current["ps"] = replace(ps, access_policies=MappingProxyType({}))  # nobody on Slack is known now
    out = h.run(ALICE, "confirm")
    assert out.reply.status is ReplyStatus.REFUSED and "I don't know you" in out.reply.text
    assert h.backend.exists(ClusterRef("ray-nlp", "demo"))


def test_limits_merge_to_the_more_generous() -> None:
    a = Limits(1, 4, 0, timedelta(hours=8))
    b = Limits(2, 2, 1, None)
    assert a.merge(b) == Limits(2, 4, 1, None)
    assert over_limits(a, workers=5, gpus=1, ttl=timedelta(hours=9), clusters_after=2) == [
        "clusters 2 > 1",
        "workers 5 > 4",
        "GPUs 1 > 0",
        "time-to-live 9h > 8h",
    ]


def test_grants_from_the_fixture_policy() -> None:
    view = AccessView.of(fixture_policy_set().access_policies.values())
    alice = view.grant_for(ALICE)
    assert alice.known and not alice.approver and not alice.devops
    assert alice.default_namespace() == "ray-nlp"
    assert alice.default_profile("ray-gpu", ["small", "gpu"]) == "gpu"
    assert view.grant_for(APPROVER).approver and not view.grant_for(APPROVER).rules
    assert view.grant_for(OPS).approver  # DevOps approve too
    assert view.grant_for(MATRIX_ALICE).may_see("ray-nlp")
    assert not view.grant_for(Identity(Platform.MATRIX, "U0ALICE")).known  # ids are per platform
    assert view.devops_channel(Platform.SLACK) == "C0DEVOPS"
    assert view.devops_channel(Platform.MATRIX) == "!ops:example.org"
    assert view.request_expiry == timedelta(hours=2)
    assert view.needs_groups


def test_group_membership_grants_rights(h: Harness) -> None:
    carol = Identity(Platform.SLACK, "U0CAROL", "Carol")
    assert h.run(carol, "list").reply.status is ReplyStatus.REFUSED
    member = Identity(Platform.SLACK, "U0CAROL", "Carol", frozenset({"S0TEAM"}))
    assert h.run(member, "create carol-c").reply.status is ReplyStatus.OK


async def test_the_bot_asks_the_resolver_for_groups(tmp_path) -> None:  # type: ignore[no-untyped-def]
    class Resolver:
        calls: list[str] = []

        async def groups_of(self, platform: Platform, user_id: str) -> frozenset[str]:
            self.calls.append(user_id)
            if user_id == "U0BROKEN":
                raise RuntimeError("usergroups.users.list failed")
            return frozenset({"S0TEAM"}) if user_id == "U0CAROL" else frozenset()

    h = make_harness(tmp_path)
    h.bot.groups = Resolver()
    ok = await h.bot.handle(IncomingCommand(Platform.SLACK, "U0CAROL", "create carol-c"))
    assert ok.status is ReplyStatus.OK, ok.text
    broken = await h.bot.handle(IncomingCommand(Platform.SLACK, "U0BROKEN", "list"))
    assert broken.status is ReplyStatus.REFUSED  # a failed lookup grants less, never more
    assert Resolver.calls == ["U0CAROL", "U0BROKEN"]


def test_with_no_access_policy_only_the_console_user_is_known(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace
    from types import MappingProxyType

    ps = replace(fixture_policy_set(), access_policies=MappingProxyType({}))
    h = make_harness(tmp_path, policy=lambda: ps, backend=MemoryBackend(ps.cluster_profiles))
    me = Identity(Platform.CONSOLE, "someone")
    assert h.run(me, "create demo").reply.status is ReplyStatus.OK
    assert h.backend.get(ClusterRef("local", "demo")).requester == "console:someone"
    assert h.run(me, "pause-all").reply.status is ReplyStatus.OK
    assert h.run(ALICE, "list").reply.status is ReplyStatus.REFUSED


@pytest.mark.parametrize(
    "spec, says",
    [
        ({"rules": [{"subjects": [{"slackUser": "U1", "matrixUser": "@a:b"}]}]}, "exactly one identity"),
        ({"rules": [{"subjects": [{}]}]}, "got none"),
        ({"rules": [{"subjects": [{"slackUsr": "U1"}]}]}, "slackUsr"),
        ({"rules": [{"limits": {"workersPerCluster": -1}}]}, "greater than or equal to 0"),
        ({"rules": [{"limits": {"maxTtl": "soon"}}]}, "not a duration"),
        ({"requestExpiry": "0s"}, "must be longer than 0"),
        ({"devops": {"slack": {}}}, "channel"),
        ({"approvers": [{"consoleUser": ""}]}, "at least 1 character"),
    ],
)
def test_access_policy_model_rejects_bad_documents(spec: dict[str, object], says: str) -> None:
    doc = {
        "apiVersion": "rayops.io/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "a"},
        "spec": spec,
    }
    with pytest.raises(ValidationError) as e:
        AccessPolicy.model_validate(doc)
    assert says in str(e.value)
