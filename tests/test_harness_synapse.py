"""The Synapse fixture is a real homeserver: two matrix-nio clients talk through it, and it is closed."""

from __future__ import annotations

import asyncio
import time
import uuid

import psutil
from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from tests.harness.synapse import SynapseServer


def _client(synapse: SynapseServer, user_id: str, token: str, device_id: str) -> AsyncClient:
    client = AsyncClient(synapse.url, user_id)
    client.restore_login(user_id, device_id, token)
    return client


async def test_two_users_exchange_a_message(synapse: SynapseServer) -> None:
    suffix = uuid.uuid4().hex[:8]
    alice_user = synapse.register_user(f"alice{suffix}", "pw-alice")
    bob_user = synapse.register_user(f"bob{suffix}", "pw-bob")
    assert alice_user.user_id == f"@alice{suffix}:{synapse.server_name}"

    alice = _client(synapse, alice_user.user_id, alice_user.access_token, alice_user.device_id)
    bob = _client(synapse, bob_user.user_id, bob_user.access_token, bob_user.device_id)
    try:
        created = await alice.room_create(name="ops", invite=[bob_user.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id

        # Bob learns of the invite through sync, as a bot would.
        sync = await bob.sync(timeout=0)
        assert isinstance(sync, SyncResponse), sync
        invites = sync.rooms.invite.get(room_id)
        assert invites is not None
        assert any(isinstance(e, InviteMemberEvent) for e in invites.invite_state)
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined

        sent = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "scale up please"}
        )
        assert isinstance(sent, RoomSendResponse), sent

        bodies: list[tuple[str, str]] = []
        deadline = time.monotonic() + 10
        while not bodies and time.monotonic() < deadline:
            sync = await bob.sync(timeout=1000, since=bob.next_batch)
            assert isinstance(sync, SyncResponse), sync
            room = sync.rooms.join.get(room_id)
            if room is not None:
                bodies = [(e.sender, e.body) for e in room.timeline.events if isinstance(e, RoomMessageText)]
        assert bodies == [(alice_user.user_id, "scale up please")]
    finally:
        await asyncio.gather(alice.close(), bob.close())


def test_registered_admin_is_admin_and_plain_user_is_not(synapse: SynapseServer) -> None:
    suffix = uuid.uuid4().hex[:8]
    admin = synapse.register_user(f"ops{suffix}", "pw", admin=True)
    user = synapse.register_user(f"dev{suffix}", "pw")

    status, body = synapse.request(
        "GET", f"/_synapse/admin/v2/users/{user.user_id}", token=admin.access_token
    )
    assert status == 200, body
    assert body["admin"] is False
    status, body = synapse.request(
        "GET", f"/_synapse/admin/v2/users/{admin.user_id}", token=user.access_token
    )
    assert status == 403, body

    status, body = synapse.request("GET", "/_matrix/client/v3/account/whoami", token=user.access_token)
    assert (status, body["user_id"]) == (200, user.user_id)


def test_homeserver_is_closed_to_the_outside(synapse: SynapseServer) -> None:
    assert synapse.pid is not None
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(synapse.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {("127.0.0.1", synapse.port)}
    # No federation or key resource is served, and public registration is off.
    assert synapse.request("GET", "/_matrix/federation/v1/version")[0] == 404
    assert synapse.request("GET", "/_matrix/key/v2/server")[0] == 404
    status, body = synapse.request("POST", "/_matrix/client/v3/register", {"username": "x", "password": "y"})
    assert status == 403, body


def test_raised_rate_limits_take_effect(synapse: SynapseServer) -> None:
    """Bursts just past Synapse's defaults succeed: 11 rooms (default burst 10), 11 invites of one
    user (nested `rc_invites.per_user`, default burst 5), 11 joins (nested `rc_joins.local`, default
    10), 11 messages (default burst 10)."""
    suffix = uuid.uuid4().hex[:8]
    alice = synapse.register_user(f"rl-alice{suffix}", "pw")
    bob = synapse.register_user(f"rl-bob{suffix}", "pw")
    rooms = []
    for i in range(11):
        status, body = synapse.request(
            "POST", "/_matrix/client/v3/createRoom", {"name": f"r{i}"}, token=alice.access_token
        )
        assert status == 200, (i, body)
        rooms.append(body["room_id"])
    for room in rooms:
        status, body = synapse.request(
            "POST",
            f"/_matrix/client/v3/rooms/{room}/invite",
            {"user_id": bob.user_id},
            token=alice.access_token,
        )
        assert status == 200, (room, body)
    for room in rooms:
        status, body = synapse.request(
            "POST", f"/_matrix/client/v3/rooms/{room}/join", {}, token=bob.access_token
        )
        assert status == 200, (room, body)
    for i in range(11):
        status, body = synapse.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{rooms[0]}/send/m.room.message/t{suffix}{i}",
            {"msgtype": "m.text", "body": str(i)},
            token=alice.access_token,
        )
        assert status == 200, (i, body)
