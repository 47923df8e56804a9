"""Approvals: durable across a restart, expire on time, decided exactly once."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

from bot.adapters.base import DestinationKind, ReplyStatus
from bot.approvals import ApprovalRequest, ApprovalState, DirectoryApprovalStore, new_id
from bot.commands.parser import ID_ALPHABET, ID_LENGTH
from controller.domain import ClusterRef
from tests.bot.conftest import ALICE, APPROVER, MATRIX_ALICE, MATRIX_BOSS, T0, Clock, make_harness


def _rid(out) -> str:  # type: ignore[no-untyped-def]
    return str(out.notifications[0].reply.buttons[0].command.split()[1])


def test_pending_requests_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    store_dir = tmp_path / "approvals"
    first = make_harness(tmp_path, approvals=DirectoryApprovalStore(store_dir), clock=clock)
    rid = _rid(first.run(ALICE, "create big workers=6"))
    assert (store_dir / f"{rid}.json").exists()
    # A new bot (new process) on the same state directory and the same cluster backend.
    second = make_harness(
        tmp_path, approvals=DirectoryApprovalStore(store_dir), clock=clock, backend=first.backend
    )
    assert [r.id for r in second.approvals.list()] == [rid]
    out = second.run(APPROVER, f"approve {rid}")
    assert out.reply.status is ReplyStatus.OK, out.reply.text
    assert first.backend.get(ClusterRef("ray-nlp", "big")).requester == "slack:U0ALICE"
    stored = json.loads((store_dir / f"{rid}.json").read_text())
    assert stored["state"] == "approved" and stored["decided_by"] == "slack:U0APPROVER"
    assert stored["outcome"].startswith("done: Creating big")


def test_requests_expire_and_the_requester_is_told(tmp_path: Path) -> None:
    h = make_harness(tmp_path, approvals=DirectoryApprovalStore(tmp_path / "a"))
    rid = _rid(h.run(ALICE, "create big workers=6"))
    h.clock.advance(hours=1)
    assert h.bot.expire_requests() == []
    h.clock.advance(hours=1, seconds=1)  # requestExpiry: 2h in the fixture policy
    notes = h.bot.expire_requests()
    assert len(notes) == 1
    assert (notes[0].to.kind, notes[0].to.id) == (DestinationKind.USER, "U0ALICE")
    assert "expired without a decision" in notes[0].reply.text
    assert h.approvals.get(rid).state is ApprovalState.EXPIRED  # type: ignore[union-attr]
    assert h.bot.expire_requests() == []  # told once
    late = h.run(APPROVER, f"approve {rid}")
    assert late.reply.status is ReplyStatus.ERROR and "already expired" in late.reply.text
    assert not h.backend.exists(ClusterRef("ray-nlp", "big"))
    assert h.audit.records[-2]["result"] == "expired"


def test_an_expired_request_is_refused_even_before_the_sweep(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    rid = _rid(h.run(ALICE, "create big workers=6"))
    h.clock.advance(hours=3)
    out = h.run(APPROVER, f"approve {rid}")
    assert out.reply.status is ReplyStatus.ERROR and "expired" in out.reply.text
    assert not h.backend.exists(ClusterRef("ray-nlp", "big"))


def test_asking_twice_gives_the_same_request(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    rid = _rid(h.run(ALICE, "create big workers=6"))
    again = h.run(ALICE, "create big workers=6")
    assert again.reply.status is ReplyStatus.PENDING and rid in again.reply.text
    assert again.notifications == ()
    assert len(h.approvals.list()) == 1


def test_approval_that_cannot_be_carried_out_is_reported_to_both(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    rid = _rid(h.run(ALICE, "create big workers=6"))
    assert h.run(APPROVER, "create big namespace=ray-nlp").reply.status is ReplyStatus.REFUSED
    from tests.bot.conftest import OPS

    h.run(OPS, "create big namespace=ray-nlp")  # someone took the name meanwhile
    out = h.run(APPROVER, f"approve {rid}")
    assert out.reply.status is ReplyStatus.ERROR
    assert "could not be carried out" in out.reply.text and "already exists" in out.reply.text
    assert "could not be carried out" in out.notifications[0].reply.text
    assert h.approvals.get(rid).outcome.startswith("failed: ")  # type: ignore[union-attr]
    assert h.audit.records[-1]["result"] == "approved-failed"


def test_matrix_requests_go_to_the_matrix_room_and_are_approved_by_text(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    out = h.run(MATRIX_ALICE, "create big workers=6")
    assert out.notifications[0].to.id == "!ops:example.org"
    assert "approve " in out.notifications[0].reply.buttons[0].command
    done = h.run(MATRIX_BOSS, f"approve {_rid(out)}")
    assert done.reply.status is ReplyStatus.OK
    assert done.notifications[0].to.id == "@alice:example.org"


def test_directory_store_compare_and_set_has_one_winner(tmp_path: Path) -> None:
    store = DirectoryApprovalStore(tmp_path)
    req = ApprovalRequest(new_id(), "slack:U1", "create x", ("workers 9 > 4",), T0, T0 + timedelta(hours=1))
    store.add(req)
    wins: list[bool] = []

    def decide(who: str) -> None:
        wins.append(store.update(req.decided(ApprovalState.APPROVED, who, T0), ApprovalState.PENDING))

    threads = [threading.Thread(target=decide, args=(f"slack:U{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_directory_store_ignores_junk_and_never_reads_outside(tmp_path: Path) -> None:
    store = DirectoryApprovalStore(tmp_path)
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "abc.json").write_text(json.dumps({"id": "abc"}))
    assert store.list(None) == []
    assert store.get("../../etc/passwd") is None
    assert store.get("") is None


def test_decided_requests_are_pruned_after_a_week(tmp_path: Path) -> None:
    store = DirectoryApprovalStore(tmp_path)
    req = ApprovalRequest(new_id(), "slack:U1", "create x", (), T0, T0 + timedelta(hours=1))
    store.add(req)
    store.update(req.decided(ApprovalState.DENIED, "slack:U2", T0), ApprovalState.PENDING)
    assert store.prune(T0 + timedelta(days=6)) == 0
    assert store.prune(T0 + timedelta(days=8)) == 1
    assert store.list(None) == []


def test_ids_are_short_and_from_the_unambiguous_alphabet() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == ID_LENGTH and set(i) <= set(ID_ALPHABET) for i in ids)
    assert not set("01ilo") & set(ID_ALPHABET)
