"""The per-channel send queue against the stand-in's real 429s: Retry-After is waited out, the same
message is sent again, one channel's wait does not hold up another, waiting messages with the same
key coalesce (and the survivor says so), and whatever is given up is logged at ERROR."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from bot.adapters.base import Image
from bot.adapters.slack_queue import ChannelQueues, OutgoingMessage
from tests.harness.slack import BOT_TOKEN
from tests.standins.slack_api import SlackApiStandIn

DEVOPS = "C0DEVOPS1"


def _queues(api: SlackApiStandIn, **kw: float) -> ChannelQueues:
    # slack_sdk's default retry handlers (connection errors only): 429s reach the queue.
    return ChannelQueues(api.web_client(BOT_TOKEN), **kw)  # type: ignore[arg-type]


async def test_429_is_honoured_and_the_same_message_arrives_after_retry_after(
    slack_api: SlackApiStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rayops.bot.slack.queue")
    slack_api.rate_limit("chat.postMessage", count=1, retry_after=1)
    q = _queues(slack_api)

    delivery = await q.submit(OutgoingMessage(DEVOPS, "MetricsUnavailable (ray-nlp/demo)", key="alert:m"))

    assert delivery.ok and delivery.attempts == 2 and delivery.ts is not None
    first, retry = slack_api.calls("chat.postMessage")
    assert (first.status, retry.status) == (429, 200)
    assert retry.at - first.at >= 1.0
    assert retry.params == first.params
    assert any(
        "rate-limited (429): retrying in 1.0 s" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


async def test_waiting_messages_with_one_key_coalesce_and_the_survivor_says_so(
    slack_api: SlackApiStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rayops.bot.slack.queue")
    slack_api.rate_limit("chat.postMessage", count=1, retry_after=1)
    q = _queues(slack_api, min_interval_s=0.05)

    first = q.submit(OutgoingMessage(DEVOPS, "approval needed: k3j2mq7x", key="approval:k3j2mq7x"))
    await slack_api.await_calls("chat.postMessage")  # in flight, waiting out its 429
    storm = [
        q.submit(OutgoingMessage(DEVOPS, f"Conflict (ray-nlp/demo): attempt {n}", key="alert:conflict"))
        for n in range(1, 5)
    ]
    other = q.submit(OutgoingMessage(DEVOPS, "PolicyInvalid: team.yaml", key="alert:policy"))
    results = await asyncio.gather(first, *storm, other)

    assert all(r.ok for r in results)
    posted = [c.params["text"] for c in slack_api.calls("chat.postMessage") if c.status == 200]
    assert posted[0] == "approval needed: k3j2mq7x"
    assert posted[1].startswith("Conflict (ray-nlp/demo): attempt 4\n(this replaces 3 earlier message(s)")
    assert posted[2] == "PolicyInvalid: team.yaml"
    assert len(posted) == 3
    assert len({r.ts for r in results[1:5]}) == 1  # every coalesced submitter learns the one ts
    assert q.coalesced == 3
    assert sum("coalesced a waiting Slack message" in r.getMessage() for r in caplog.records) == 3


async def test_one_channels_wait_does_not_hold_up_another(slack_api: SlackApiStandIn) -> None:
    slack_api.rate_limit("chat.postMessage", count=1, retry_after=1)
    q = _queues(slack_api)

    devops = q.submit(OutgoingMessage(DEVOPS, "alert"))
    await slack_api.await_calls("chat.postMessage")
    direct = await q.submit(OutgoingMessage("U0ALICE01", "demo is ready."))
    assert direct.ok and direct.attempts == 1
    assert not devops.done()  # still waiting out its Retry-After
    assert (await devops).ok
    limited, to_alice, retried = slack_api.calls("chat.postMessage")
    assert [c.params["channel"] for c in (limited, to_alice, retried)] == [DEVOPS, "U0ALICE01", DEVOPS]
    assert to_alice.at < retried.at


async def test_messages_to_one_channel_are_paced_in_order(slack_api: SlackApiStandIn) -> None:
    q = _queues(slack_api, min_interval_s=0.3)
    results = await asyncio.gather(*(q.submit(OutgoingMessage(DEVOPS, f"m{n}")) for n in range(3)))
    calls = slack_api.calls("chat.postMessage")
    assert [c.params["text"] for c in calls] == ["m0", "m1", "m2"]
    assert all(b.at - a.at >= 0.29 for a, b in itertools.pairwise(calls))
    assert all(r.ok for r in results)


async def test_permanent_errors_and_exhausted_retries_are_logged_not_dropped_silently(
    slack_api: SlackApiStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rayops.bot.slack.queue")
    q = _queues(slack_api, max_attempts=3)
    slack_api.fail("chat.postMessage", "channel_not_found")
    lost = await q.submit(OutgoingMessage("C0GONE", "demo was deleted: expired", key="Deleted:ray-nlp/demo"))
    slack_api.rate_limit("chat.postMessage", count=5, retry_after=0)
    tired = await q.submit(OutgoingMessage(DEVOPS, "Failure (ray-nlp/demo): x"))

    assert (lost.ok, lost.error, lost.attempts) == (False, "channel_not_found", 1)
    assert (tired.ok, tired.attempts) == (False, 3)
    assert tired.error is not None and "gave up after 3 attempts" in tired.error
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "C0GONE" in m and "channel_not_found" in m and "demo was deleted: expired" in m for m in errors
    )
    assert any(DEVOPS in m and "Failure (ray-nlp/demo): x" in m for m in errors)


async def test_close_gives_up_on_what_is_still_waiting_and_says_so(
    slack_api: SlackApiStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="rayops.bot.slack.queue")
    slack_api.rate_limit("chat.postMessage", count=1, retry_after=30)
    q = _queues(slack_api)
    waiting = [q.submit(OutgoingMessage(DEVOPS, f"alert {n}")) for n in range(2)]
    await slack_api.await_calls("chat.postMessage")

    await q.close(timeout=0.2)
    late = await q.submit(OutgoingMessage(DEVOPS, "after close"))

    results = [await w for w in waiting]
    assert [r.ok for r in results] == [False, False]
    assert not late.ok and late.error == "shutting down"
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "alert 0" in messages and "alert 1" in messages and "after close" in messages


async def test_an_image_is_uploaded_into_the_thread_of_its_message(slack_api: SlackApiStandIn) -> None:
    q = _queues(slack_api)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    delivery = await q.submit(OutgoingMessage(DEVOPS, "status", image=Image("c.png", png, "chart")))
    [uploaded] = slack_api.files()
    assert delivery.ok and delivery.image_error is None
    assert (uploaded.content, uploaded.thread_ts, uploaded.channel_id) == (png, delivery.ts, DEVOPS)
