"""`rayops up`: laptop mode: a real local Ray cluster, the controller and the console bot (contracts.md 7).

What it does, in order:
1. takes the controller lock in the state directory (`<state dir>/controller.lock`): only one
   controller scales local clusters. If another `rayops up` holds it, `--demo-burst N` sends the burst
   to that one's cluster and exits; anything else says who holds the lock and exits;
2. starts a local Ray cluster from the `cpu-default` profile (a 0-CPU head and a group `cpu` of 0-4
   one-CPU workers), or adopts one of that name that an earlier run left running;
3. runs the controller's scheduler in threads (local backend, 2 s tick, the policies in `policies/`)
   and prints each decision with its reasons as it happens;
4. runs the console bot on this terminal (`ray> `; `help` lists the commands), or with
   `--no-console` (or no terminal) just prints decisions until Ctrl-C;
5. on Ctrl-C (or `exit`): stops the controller, the demo burst's driver, and the cluster *if it
   started it* (an adopted cluster keeps running, as does one started with `--keep`).

Demo burst: `rayops up --demo-burst 16` (here or from a second terminal while one runs) submits 16
one-CPU tasks of `--task-seconds` (15) each from a separate driver process: workers are added within
a tick or two, the tasks finish, and idle workers are removed after the policy's scale-down window.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from bot.cli.controller import add_settings_flags, settings_from

if TYPE_CHECKING:
    from controller.backends.base import ClusterStatus
    from controller.backends.local import LocalBackend
    from controller.daemon import Controller
    from controller.domain import ClusterRef
    from controller.events import Event, EventSink, EventSource
    from controller.settings import ControllerSettings

log = logging.getLogger("rayops.up")

BURST_DRIVER = """
import json, sys, time
import ray
n, secs, address = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ray.init(address=address, log_to_driver=False, logging_level="ERROR")

@ray.remote(num_cpus=1, max_retries=0)
def work(i):
    time.sleep(secs)
    return i

start = time.time()
refs = [work.remote(i) for i in range(n)]
print(json.dumps({"submitted": n}), flush=True)
done = ray.get(refs)
print(json.dumps({"done": len(done), "seconds": round(time.time() - start, 1)}), flush=True)
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "up",
        help="Laptop mode: a real local Ray cluster, the controller and the console bot.",
        description="Laptop mode: a real local Ray cluster, the controller and the console bot. "
        "Ctrl-C stops what it started.",
    )
    add_settings_flags(p, backend=False)
    p.add_argument("--name", default="laptop", help="the local cluster's name (default laptop)")
    p.add_argument("--profile", default="cpu-default", help="ClusterProfile for a new cluster")
    p.add_argument("--user", help="console user (default $RAYOPS_CONSOLE_USER or the login name)")
    p.add_argument("--no-console", action="store_true", help="print decisions only, no console bot")
    p.add_argument("--keep", action="store_true", help="leave the cluster running at exit")
    p.add_argument("--demo-burst", type=int, metavar="N", help="submit N one-CPU tasks once it is up")
    p.add_argument("--task-seconds", type=float, default=15.0, help="length of each demo task (15)")
    p.set_defaults(func=run_up)


class Terminal:
    """One writer for the terminal: decision lines land above the console prompt, not inside it."""

    def __init__(self, out: TextIO, prompt: str = "") -> None:
        self.out = out
        self.prompt = prompt
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock, contextlib.suppress(BrokenPipeError, ValueError):
            self.out.write(f"\r{text}\n{self.prompt}")
            self.out.flush()


class DecisionPrinter:
    """`EventSink` printing each event as one line: time, type, cluster, what and why."""

    def __init__(self, terminal: Terminal, include: Callable[[Event], bool] = lambda e: True) -> None:
        self.terminal = terminal
        self.include = include

    def publish(self, event: Event) -> None:
        if not self.include(event):
            return
        where = f" {event.cluster}" if event.cluster else ""
        at = event.at.astimezone().strftime("%H:%M:%S")
        self.terminal.line(f"[{at}] {event.type}{where}: {event.message}")


class Burst:
    """The demo burst's driver process (its own session, so Ctrl-C here stops it by process group)."""

    def __init__(self, address: str, tasks: int, seconds: float, log_path: Path, terminal: Terminal) -> None:
        from controller import localray

        env = dict(os.environ) | localray.DRIVER_ENV | {"RAY_ADDRESS": address}
        self.terminal = terminal
        self.started = time.monotonic()
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BURST_DRIVER, str(tasks), str(seconds), address],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            start_new_session=True,
        )
        self.terminal.line(
            f"demo burst: submitting {tasks} one-CPU tasks of {seconds:g} s (driver pid {self.proc.pid}, "
            f"log {log_path})"
        )
        self.thread = threading.Thread(target=self._watch, name="demo-burst", daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                msg = json.loads(raw)
                if "done" in msg:
                    self.terminal.line(
                        f"demo burst: all {msg['done']} tasks finished {msg['seconds']} s after submission; "
                        "idle workers go after the scale-down window"
                    )
        code = self.proc.wait()
        if code != 0:
            self.terminal.line(f"demo burst: the driver exited with {code}; see {self.log.name}")

    def wait(self) -> int:
        self.thread.join()
        return self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def _log_to_file(path: Path, level: str, secrets: list[str]) -> None:
    from bot.redact import install_log_redaction

    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.ERROR)
    root.addHandler(console)
    for noisy in ("urllib3", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    install_log_redaction(secrets)


def _address(backend: LocalBackend, name: str) -> str | None:
    rec = backend.store.read(name)
    return rec.head.gcs_address if rec is not None and rec.head is not None else None


def run_up(args: argparse.Namespace) -> int:
    from controller.backends.base import BackendError, ClusterNotFound, ClusterRequest
    from controller.daemon import build_controller
    from controller.domain import ClusterRef
    from controller.events import ALERT_TYPES, MemoryEvents
    from controller.leader import FileLockElector
    from controller.settings import secret_values

    try:
        settings = settings_from(args, backend="local", http_port=args.http_port or "0")
    except ValueError as e:
        print(f"rayops: {e}", file=sys.stderr)
        return 2
    if not settings.policy_dir.is_dir():
        print(
            f"rayops: no policy directory at {settings.policy_dir}; run from the repository, or pass "
            "--policies DIR (or set RAYOPS_POLICY_DIR)",
            file=sys.stderr,
        )
        return 2
    log_path = settings.state_dir / "rayops-up.log"
    _log_to_file(log_path, settings.log_level, secret_values(settings))
    user = args.user or os.environ.get("RAYOPS_CONSOLE_USER") or getpass.getuser()
    console = not args.no_console and sys.stdin.isatty()
    terminal = Terminal(sys.stdout, "ray> " if console else "")
    ref = ClusterRef("local", args.name)

    elector = FileLockElector(settings.lock_path, f"rayops up (pid {os.getpid()})")
    if not elector.try_acquire():
        return _attach(args, settings, ref, terminal)

    bot_events = MemoryEvents()
    printer = DecisionPrinter(terminal, (lambda e: not e.is_alert) if console else (lambda e: True))
    alerts = _Filtered(bot_events, lambda e: e.type in ALERT_TYPES) if console else None
    controller = build_controller(
        settings, extra_sinks=[printer, *([alerts] if alerts else [])], elector=elector
    )
    backend: LocalBackend = controller.backend  # type: ignore[assignment]
    created = False
    burst: Burst | None = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        try:
            status = backend.get(ref)
            print(f"rayops up: adopting local cluster {args.name} ({status.state}); it keeps running at exit")
        except ClusterNotFound:
            print(f"rayops up: starting local Ray cluster {args.name} (profile {args.profile}); ~10-30 s ...")
            status = backend.create(
                ClusterRequest(args.name, "local", args.profile, f"console:{user}", workers=0)
            )
            created = True
        controller.start()
        _banner(status, controller, args, log_path, _address(backend, args.name))
        address = _address(backend, args.name)
        if args.demo_burst and address:
            burst = Burst(
                address, args.demo_burst, args.task_seconds, settings.state_dir / "burst.log", terminal
            )
        if console:
            _console(controller, backend, settings, user, bot_events)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\nrayops up: stopping ...")
    except BackendError as e:
        print(f"rayops up: {e}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C (or a terminal's SIGINT to the whole group) must not cut the clean-up short:
        # that would leave the head and workers running with nobody to stop them.
        interrupt = signal.signal(signal.SIGINT, _still_stopping)
        signal.signal(signal.SIGTERM, _still_stopping)
        try:
            if burst is not None:
                burst.stop()
            controller.stop()
            if created and not args.keep:
                with contextlib.suppress(BackendError):
                    backend.delete(ref)
                    print(f"rayops up: stopped local cluster {args.name} (head and workers)")
            elif created or args.keep:
                print(f"rayops up: local cluster {args.name} left running; `rayops up` adopts it next time")
        finally:
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, previous)
    return 0


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _still_stopping(_signum: int, _frame: FrameType | None) -> None:
    print("rayops up: still stopping the controller and the cluster's Ray processes; a few seconds more")


class _Filtered:
    """Passes on only the events `keep` accepts (the console bot gets the alerts, to route them)."""

    def __init__(self, sink: EventSink, keep: Callable[[Event], bool]) -> None:
        self.sink = sink
        self.keep = keep

    def publish(self, event: Event) -> None:
        if self.keep(event):
            self.sink.publish(event)


def _banner(
    status: ClusterStatus,
    controller: Controller,
    args: argparse.Namespace,
    log_path: Path,
    address: str | None,
) -> None:
    dashboard = status.connect.dashboard_url if status.connect is not None else None
    metrics = controller.endpoints.url + "/metrics" if controller.endpoints is not None else "off"
    lines = [
        f"rayops up: cluster local/{args.name} is up; the controller scales it every "
        f"{controller.settings.loop.tick_seconds:g} s with the policies in {controller.settings.policy_dir}",
        f"  Ray dashboard   {dashboard or 'starting'}",
        f"  drivers         RAY_ADDRESS={address or '?'} (and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)",
        f"  rayops metrics  {metrics}",
        f"  log             {log_path}",
        "  demo burst      rayops up --demo-burst 16   (here, or from another terminal)",
        "  Ctrl-C stops the controller" + (" and this cluster" if not args.keep else ""),
    ]
    print("\n".join(lines), flush=True)


def _console(
    controller: Controller,
    backend: LocalBackend,
    settings: ControllerSettings,
    user: str,
    events: EventSource,
) -> None:
    """The console bot on this thread until `exit`, end of input or Ctrl-C (contracts.md section 7)."""
    from bot.compose import build_bot, policy_provider, run_console
    from bot.settings import BotSettings

    bot_settings = BotSettings.from_env(
        policy_dir=settings.policy_dir, state_dir=settings.state_dir, backend="local", console_user=user
    )
    bot = build_bot(bot_settings, backend, policy_provider(controller.store))
    run_console(bot, events, sys.stdin, sys.stdout)


def _attach(
    args: argparse.Namespace, settings: ControllerSettings, ref: ClusterRef, terminal: Terminal
) -> int:
    """Another `rayops up` runs: send it a burst, or say who holds the lock."""
    from controller.backends.local import LocalBackend

    holder = _holder(settings.lock_path)
    if not args.demo_burst:
        print(
            f"rayops up: another controller already runs on {settings.state_dir} ({holder}); use its "
            "terminal, or stop it first. `rayops up --demo-burst N` sends it a demo burst.",
            file=sys.stderr,
        )
        return 1
    backend = LocalBackend({}, state_dir=settings.state_dir)
    address = _address(backend, ref.name)
    if address is None:
        print(
            f"rayops up: no running local cluster named {ref.name} in {settings.state_dir}", file=sys.stderr
        )
        return 1
    print(f"rayops up: {holder} runs the controller; sending it a demo burst", flush=True)
    burst = Burst(address, args.demo_burst, args.task_seconds, settings.state_dir / "burst.log", terminal)
    try:
        return burst.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        burst.stop()


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


__all__ = ["BURST_DRIVER", "Burst", "DecisionPrinter", "Terminal", "register", "run_up"]
