"""Benchmark P4 (issue 7): Slack ack latency of concurrent signed slash commands over HTTP.

    .venv/bin/python -m tests.benchmarks.bench_p4 [--concurrency 20] [--rounds 25]

The whole bot as a process of its own, `rayops bot run --adapter slack` in HTTP mode (the real
bolt app behind the adapter's WSGI server, replay guard, lazy listeners, memory backend, durable
approvals and audit in a temporary state directory), its Web API and response URLs answered by the
loopback stand-in in this process, where the senders run too (so they do not share the bot's GIL,
as Slack's servers would not).

Each round fires `concurrency` slash commands at once from as many threads (a barrier releases
them together), each signed like Slack's with a fresh timestamp, a mix of `status demo`, `list`
and `whoami`. Measured per request: the ack (HTTP 200 back to the sender: what Slack's 3 s
deadline is about) and the answer (the bot's post reaching the response URL). The first round is
a warm-up and is not counted. Goal: ack p99 <= 100 ms. Prints one markdown row; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from controller.localray import free_ports
from tests.bot_adapters.conftest import SLACK_ACCESS, write_policies
from tests.harness.slack import BOT_TOKEN, SIGNING_SECRET
from tests.standins.slack_api import SlackApiStandIn
from tests.standins.slack_payloads import slash_command_body
from tests.standins.slack_signing import signed_request

COMMANDS = ("status demo", "list", "whoami")
ROOT = Path(__file__).resolve().parents[2]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def run(concurrency: int, rounds: int) -> tuple[list[float], list[float]]:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        os.environ.pop(name, None)
    acks: list[float] = []
    answers: list[float] = []
    slack_port, health_port = free_ports(2)
    with tempfile.TemporaryDirectory() as tmp, SlackApiStandIn() as api:
        api.set_usergroup("S0NLPTEAM", [])
        api.set_usergroup("S0APPROVE", [])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYOPS_", "SLACK_", "MATRIX_"))}
        env |= {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "RAYOPS_SLACK_MODE": "http",
            "RAYOPS_SLACK_PORT": str(slack_port),
            "RAYOPS_SLACK_API_URL": api.base_url,
            "RAYOPS_HTTP_PORT": str(health_port),
            "RAYOPS_NAMESPACE": "ray-nlp",
        }
        policies = write_policies(Path(tmp) / "policies", SLACK_ACCESS)
        command = [str(ROOT / ".venv" / "bin" / "rayops"), "bot", "run", "--adapter", "slack"]
        command += ["--backend", "memory", "--policies", str(policies), "--ready-on-create"]
        command += ["--state-dir", str(Path(tmp) / "state")]
        log = (Path(tmp) / "bot.log").open("w")
        bot = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            _wait_ready(bot, health_port)
            url = f"http://127.0.0.1:{slack_port}/slack/events"
            first = api.new_response_url()
            signed_request(url, slash_command_body("create demo", response_url=first), SIGNING_SECRET).send()
            api.wait_for_responses(first)
            for r in range(rounds + 1):
                round_acks, round_answers = _round(api, url, concurrency, r)
                if r > 0:  # round 0 warms up imports, pools and caches
                    acks += round_acks
                    answers += round_answers
        finally:
            bot.send_signal(signal.SIGTERM)
            bot.wait(60)
    return acks, answers


def _wait_ready(bot: subprocess.Popen[bytes], port: int, timeout: float = 60.0) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bot.poll() is not None:
            raise RuntimeError(f"the bot exited with {bot.returncode}")
        try:
            with opener.open(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the bot did not become ready")


def _round(api: SlackApiStandIn, url: str, concurrency: int, n: int) -> tuple[list[float], list[float]]:
    barrier = threading.Barrier(concurrency)
    acks = [0.0] * concurrency
    sent_at = [0.0] * concurrency
    statuses = [0] * concurrency
    urls = [api.new_response_url() for _ in range(concurrency)]
    errors: list[str] = []

    def one(i: int) -> None:
        text = COMMANDS[(i + n) % len(COMMANDS)]
        body = slash_command_body(text, response_url=urls[i], user_id="U0ALICE01")
        request = signed_request(url, body, SIGNING_SECRET)
        barrier.wait()
        sent_at[i] = time.perf_counter()
        try:
            reply = request.send(timeout=10)
        except OSError as e:
            errors.append(f"{type(e).__name__}: {e}")
            return
        acks[i] = time.perf_counter() - sent_at[i]
        statuses[i] = reply.status

    threads = [threading.Thread(target=one, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(s != 200 for s in statuses):
        raise RuntimeError(f"not every command was acked 200: {statuses} {errors}")
    # Convert the stand-in's monotonic receive times to latencies from each send.
    offset = time.monotonic() - time.perf_counter()
    answers = []
    for i, u in enumerate(urls):
        [post] = api.wait_for_responses(u, timeout=30)
        answers.append(post.at - (sent_at[i] + offset))
    return acks, answers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--rounds", type=int, default=25)
    args = p.parse_args()
    acks, answers = run(args.concurrency, args.rounds)
    ms = [a * 1000 for a in acks]
    ans = [a * 1000 for a in answers]
    load = os.getloadavg()[0]
    print(
        "| concurrency | requests | ack p50 ms | ack p99 ms | ack max ms | answer p50 ms | answer p99 ms "
        "| CPUs | load avg (1 min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.concurrency} | {len(ms)} | {statistics.median(ms):.1f} | {percentile(ms, 99):.1f} "
        f"| {max(ms):.1f} | {statistics.median(ans):.1f} | {percentile(ans, 99):.1f} "
        f"| {os.cpu_count()} | {load:.1f} |"
    )


if __name__ == "__main__":
    main()
