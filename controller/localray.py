"""Start and stop real Ray nodes on this host, on loopback, one process group each.

Laptop mode runs each local cluster as its own Ray head plus `ray start --block` worker processes, and
the test harness does the same. Several clusters (and several people's) may share one host, so:

- every listener is on 127.0.0.1 and every port is chosen free here, never Ray's defaults (6379, 8265,
  8080, 52365, 44217, 44227 would collide between heads and workers);
- every node gets its own short `--temp-dir`: two `ray start` in one temp dir race on socket and log
  names, and Unix socket paths must stay under ~107 bytes;
- every node runs `ray start --block` in a new session, so its pid is also its session and
  process-group id, and SIGTERM to that pid is Ray's own graceful stop (a worker is drained through
  the GCS first);
- a node's processes are found by that session id plus the inherited `NODE_ENV_MARKER=<temp dir>`, so
  leftovers that Ray re-parents to PID 1 (the log monitor) are still found and killed. Nothing is
  ever found or killed by name, and `ray stop` (which kills every Ray process on the host) is never
  used;
- a node's IP is exactly 127.0.0.1 (see `_LAUNCHER`), and drivers need `DRIVER_ENV` to reach it.

The handles are plain frozen dataclasses that round-trip through `to_dict`/`from_dict`, so another
process (a CLI call, a notebook) can stop a node that this one started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "DRIVER_ENV",
    "LOCALHOST",
    "NODE_ENV_MARKER",
    "NODE_LABEL",
    "SD_FILE_NAME",
    "HeadPorts",
    "LocalHead",
    "LocalRayError",
    "LocalWorker",
    "StopReport",
    "WorkerPorts",
    "drain_idle",
    "find_node",
    "free_ports",
    "is_running",
    "kill_marked",
    "list_nodes",
    "make_temp_dir",
    "node_processes",
    "node_running",
    "running_head",
    "start_head",
    "start_worker",
    "stop_head",
    "stop_worker",
    "wait_for_node",
]

LOCALHOST = "127.0.0.1"
# The head rewrites this Prometheus file_sd file in its temp dir with every node's metrics port.
SD_FILE_NAME = "prom_metrics_service_discovery.json"
# Ray label naming the node after its temp dir: all local nodes share one IP, so the IP cannot tell
# them apart in the dashboard, and the node id is only known once the node has registered.
NODE_LABEL = "rayops.io/local-node"
# Inherited by every process of a node, re-parented helpers included (processes that rename
# themselves may lose it: see `_node_processes`).
NODE_ENV_MARKER = "RAYOPS_LOCAL_RAY_NODE"
# Unix socket paths are limited to 108 bytes; Ray appends about 60 to the temp dir
# (`/session_<date>_<time>_<pid>/sockets/plasma_store`).
MAX_TEMP_DIR_LEN = 40
START_LOG_NAME = "rayops-ray-start.log"
# Written into a node's temp dir as soon as its `ray start` is spawned (pid and ports), so a process
# that finds the node half-started after its starter died can adopt it instead of killing it.
SPAWN_FILE_NAME = "rayops-spawn.json"
# Ray replaces a loopback `--node-ip-address` (and a loopback `--address`) by the host's routable IP,
# found by a UDP route lookup towards 8.8.8.8, and then binds GCS, agents and metrics on all
# interfaces. Only a node whose IP stays exactly 127.0.0.1 binds everything to loopback. `ray start`
# is therefore run through this launcher, which makes that lookup answer 127.0.0.1 in the `ray start`
# process; every process it spawns gets the node IP as an argument.
#
# It also gives a starting node longer to register with the GCS: `ray start` gives up after a fixed
# 30 s (`Node.__init__`: "The current node timed out during startup"), which several nodes starting
# at once on a loaded 2-core machine miss; the launcher makes each of Ray's node look-ups there retry
# for up to REGISTER_WAIT_S instead, while `_start_and_wait` still bounds the whole start.
REGISTER_WAIT_S = 120
_LAUNCHER = (
    "import sys, time\n"
    "import ray._private.services as services\n"
    f"services.node_ip_address_from_perspective = lambda address=None: {LOCALHOST!r}\n"
    "_get_node = services.get_node\n"
    "def _patient_get_node(gcs_address, node_id):\n"
    f"    deadline = time.monotonic() + {REGISTER_WAIT_S}\n"
    "    while True:\n"
    "        try:\n"
    "            return _get_node(gcs_address, node_id)\n"
    "        except RuntimeError:\n"
    "            if time.monotonic() > deadline:\n"
    "                raise\n"
    "            time.sleep(0.5)\n"
    "services.get_node = _patient_get_node\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv = ['ray', *sys.argv[1:]]\n"
    "sys.exit(main())\n"
)
# What a driver (`ray.init(address=...)`) needs in its environment, before `import ray`, to connect to
# a local node: without it, the driver turns 127.0.0.1 into the routable IP, where nothing listens.
DRIVER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

# Popen objects of the nodes this process started, so their exit status is collected (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LocalRayError(RuntimeError):
    """A local Ray node failed to start, register or stop; the message carries the start log's tail."""


def free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """Ports free on `host` right now, all distinct.

    The sockets are held open together while picking, so one call never returns the same port twice.
    Another process may still take a port before Ray binds it; callers retry a failed start.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_temp_dir(prefix: str = "rayops-", parent: str | Path | None = None) -> Path:
    """A fresh, short temp dir for one Ray node (see MAX_TEMP_DIR_LEN for why short).

    The name is hex after the prefix (not `mkdtemp`'s alphabet, which may end in `_`): it doubles as
    the node's Ray label value, which must end with a letter or digit.
    """
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    if len(str(base / prefix)) + 10 > MAX_TEMP_DIR_LEN:
        raise LocalRayError(
            f"temp dirs under {base} would be longer than {MAX_TEMP_DIR_LEN} characters; Ray's socket "
            "paths under them would exceed the Unix limit"
        )
    while True:
        path = base / f"{prefix}{secrets.token_hex(5)}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path


def _label_value(name: str) -> str:
    """`name` as a valid Ray (Kubernetes-style) label value."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:63].strip("_.-")
    return value or "node"


@dataclass(frozen=True)
class HeadPorts:
    gcs: int
    dashboard: int
    metrics_export: int
    client_server: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    autoscaler_metrics: int
    dashboard_metrics: int

    @classmethod
    def allocate(cls) -> HeadPorts:
        return cls(*free_ports(len(fields(cls))))


@dataclass(frozen=True)
class WorkerPorts:
    metrics_export: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int

    @classmethod
    def allocate(cls) -> WorkerPorts:
        return cls(*free_ports(len(fields(cls))))


@dataclass(frozen=True)
class LocalHead:
    """A running head: `pid` is its `ray start --block` process and process group."""

    pid: int
    temp_dir: Path
    ports: HeadPorts
    node_id: str
    node_name: str
    num_cpus: float
    num_gpus: float
    resources: dict[str, float] = field(default_factory=dict, hash=False)

    @property
    def gcs_address(self) -> str:
        return f"{LOCALHOST}:{self.ports.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.dashboard}"

    @property
    def metrics_port(self) -> int:
        return self.ports.metrics_export

    @property
    def sd_file(self) -> Path:
        return self.temp_dir / SD_FILE_NAME

    @property
    def log_path(self) -> Path:
        return self.temp_dir / START_LOG_NAME

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["temp_dir"] = str(self.temp_dir)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LocalHead:
        return cls(
            pid=int(d["pid"]),
            temp_dir=Path(d["temp_dir"]),
            ports=HeadPorts(**d["ports"]),
            node_id=str(d["node_id"]),
            node_name=str(d["node_name"]),
            num_cpus=float(d["num_cpus"]),
            num_gpus=float(d["num_gpus"]),
            resources={str(k): float(v) for k, v in d.get("resources", {}).items()},
        )


@dataclass(frozen=True)
class LocalWorker:
    """A running worker node: `pid` is its `ray start --block` process and process group."""

    pid: int
    temp_dir: Path
    ports: WorkerPorts
    node_id: str
    node_name: str
    gcs_address: str
    dashboard_url: str
    num_cpus: float
    num_gpus: float
    resources: dict[str, float] = field(default_factory=dict, hash=False)

    @property
    def metrics_port(self) -> int:
        return self.ports.metrics_export

    @property
    def log_path(self) -> Path:
        return self.temp_dir / START_LOG_NAME

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["temp_dir"] = str(self.temp_dir)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LocalWorker:
        return cls(
            pid=int(d["pid"]),
            temp_dir=Path(d["temp_dir"]),
            ports=WorkerPorts(**d["ports"]),
            node_id=str(d["node_id"]),
            node_name=str(d["node_name"]),
            gcs_address=str(d["gcs_address"]),
            dashboard_url=str(d["dashboard_url"]),
            num_cpus=float(d["num_cpus"]),
            num_gpus=float(d["num_gpus"]),
            resources={str(k): float(v) for k, v in d.get("resources", {}).items()},
        )


@dataclass(frozen=True)
class StopReport:
    """How a stop went: `graceful` is False when anything had to be SIGKILLed."""

    graceful: bool
    duration_s: float
    killed_pids: tuple[int, ...] = ()


# --------------------------------------------------------------------------- processes


def _read_proc(pid: int, name: str) -> bytes | None:
    try:
        return (Path("/proc") / str(pid) / name).read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _is_zombie(pid: int) -> bool:
    stat = _read_proc(pid, "stat")
    if stat is None:
        return True
    return stat.rsplit(b")", 1)[1].split()[0] == b"Z"


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            _CHILDREN.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (collects it first if it is a child of ours)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _references(pid: int, temp_dir: Path) -> bool:
    """Whether the process belongs to the node in `temp_dir` (guards against a reused pid)."""
    marker = f"{NODE_ENV_MARKER}={temp_dir}".encode()
    env = _read_proc(pid, "environ")
    if env is not None and marker in env.split(b"\0"):
        return True
    cmd = _read_proc(pid, "cmdline")
    return cmd is not None and str(temp_dir).encode() in cmd


def _session_and_group(pid: int) -> tuple[int, int] | None:
    stat = _read_proc(pid, "stat")
    if stat is None:
        return None
    fields_ = stat.rsplit(b")", 1)[1].split()
    if fields_[0] == b"Z":
        return None
    return int(fields_[3]), int(fields_[2])


def _node_processes(leader: int, temp_dir: Path) -> list[int]:
    """Live processes of the node: its session (started by us with `start_new_session`), plus any
    process carrying its marker or naming its temp dir.

    Both are needed. Ray's agents and dashboard modules rename themselves (setproctitle), which
    overwrites their command line and often their environment, so only the session finds them; a
    process that left the session would be found only by the marker. The session counts only while
    its leader, or one of its members, still references the temp dir: a session id is a pid, and
    once every process of the node is gone it may be reused by a stranger.
    """
    me = os.getpid()
    members: list[int] = []
    marked: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        ids = _session_and_group(pid)
        if ids is None:
            continue
        if leader in ids:
            members.append(pid)
        if _references(pid, temp_dir):
            marked.add(pid)
    if not marked.intersection(members):
        members = []
    return sorted(marked.union(members))


def node_processes(node: LocalHead | LocalWorker) -> list[int]:
    """Live pids of every process belonging to `node` (empty once it is fully stopped)."""
    return _node_processes(node.pid, node.temp_dir)


def node_running(node: LocalHead | LocalWorker) -> bool:
    """Whether the node's `ray start --block` process still runs (and is that node's, not a reused pid)."""
    return is_running(node.pid) and _references(node.pid, node.temp_dir)


def kill_marked(temp_dir: Path) -> list[int]:
    """SIGKILL every live process carrying the marker of the node in `temp_dir`; returns what was hit.

    For a node whose starter died before it learned the node's pid (a half-started node found by
    another process): the marker, and the sessions of the processes carrying it, are all that tie
    those processes to the node.
    """
    killed: list[int] = []
    own_session = os.getsid(0)
    for _ in range(3):  # a dying parent may still fork; a few rounds catch stragglers
        marked = _node_processes(-1, temp_dir)
        # Agents that renamed themselves may have lost the marker; they stay in the node's session.
        sessions = {ids[0] for ids in map(_session_and_group, marked) if ids is not None} - {own_session}
        left = sorted(set(marked).union(*(_node_processes(sid, temp_dir) for sid in sessions)))
        if not left:
            break
        for p in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
                killed.append(p)
        time.sleep(0.2)
    for p in killed:
        _reap(p)
    return sorted(set(killed))


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_running(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _wait_no_processes(pid: int, temp_dir: Path, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = _node_processes(pid, temp_dir)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def _kill_node(pid: int, temp_dir: Path) -> list[int]:
    """SIGKILL the node's process group and every process carrying its marker; returns what was hit."""
    killed: list[int] = []
    if is_running(pid) and _references(pid, temp_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
    for _ in range(3):  # a dying parent may still fork; a few rounds catch stragglers
        left = _node_processes(pid, temp_dir)
        if not left:
            break
        for p in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
                killed.append(p)
        time.sleep(0.2)
    _wait_exit(pid, 5)
    return sorted(set(killed))


def _stop_node(pid: int, temp_dir: Path, timeout_s: float, leftover_grace_s: float) -> StopReport:
    started = time.monotonic()
    graceful = True
    killed: list[int] = []
    if is_running(pid) and _references(pid, temp_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        graceful = _wait_exit(pid, timeout_s)
    # Ray stops a node's processes when its `ray start --block` exits; anything still carrying the
    # marker after a grace period (or everything, if the stop timed out) is killed.
    left = _wait_no_processes(pid, temp_dir, leftover_grace_s if graceful else 0)
    if left or not graceful:
        killed = _kill_node(pid, temp_dir)
        graceful = graceful and not killed
    _CHILDREN.pop(pid, None)
    return StopReport(graceful=graceful, duration_s=time.monotonic() - started, killed_pids=tuple(killed))


# --------------------------------------------------------------------------- dashboard


def _get_json(url: str, timeout_s: float) -> Any:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def list_nodes(dashboard_url: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Every node the GCS knows (ALIVE and DEAD), as the state API `/api/v0/nodes` returns them."""
    body = _get_json(f"{dashboard_url.rstrip('/')}/api/v0/nodes?limit=10000", timeout_s)
    if not body.get("result"):
        raise LocalRayError(f"dashboard refused the node list: {body.get('msg')}")
    nodes: list[dict[str, Any]] = body["data"]["result"]["result"]
    return nodes


def find_node(dashboard_url: str, node_name: str, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """The newest node labelled `NODE_LABEL=node_name`, or None."""
    matches = [
        n for n in list_nodes(dashboard_url, timeout_s) if n.get("labels", {}).get(NODE_LABEL) == node_name
    ]
    if not matches:
        return None
    return max(matches, key=lambda n: int(n.get("start_time_ms") or 0))


def wait_for_node(
    dashboard_url: str,
    node_name: str,
    state: str = "ALIVE",
    timeout_s: float = 60.0,
    pid: int | None = None,
) -> dict[str, Any]:
    """Poll the dashboard until the named node reaches `state`; fail early if `pid` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        if pid is not None and not is_running(pid):
            raise LocalRayError(f"ray start (pid {pid}) exited before node {node_name} was {state}")
        try:
            node = find_node(dashboard_url, node_name, timeout_s=5.0)
            if node is not None and node.get("state") == state:
                return node
            last_error = None
        except (OSError, ValueError, KeyError, LocalRayError) as e:  # dashboard still starting
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise LocalRayError(f"node {node_name} not {state} after {timeout_s:.0f} s{detail}")
        time.sleep(0.25)


def drain_idle(gcs_address: str, node_id: str, message: str) -> tuple[bool, str]:
    """Ask the GCS to drain an idle node for termination: `(accepted, rejection reason)`.

    The raylet accepts an idle-termination drain only while nothing runs on the node, and then takes
    no new work, so "is it idle?" and "stop sending it work" are one atomic step there; a removal
    that checked activity a moment earlier cannot lose a task that landed since. A busy node answers
    `(False, "... no longer idle.")`. This is the call `ray drain-node` and Ray's own autoscaler (v2)
    make; it is not part of Ray's stable API, so it is imported here only.
    """
    import ray._raylet
    from ray.core.generated import autoscaler_pb2

    client = ray._raylet.GcsClient(address=gcs_address)  # type: ignore[attr-defined]
    reason = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_IDLE_TERMINATION")  # type: ignore[attr-defined]
    accepted, rejection = client.drain_node(node_id, reason, message, 0)
    return bool(accepted), str(rejection)


# --------------------------------------------------------------------------- start / stop


def _ray_start_command() -> list[str]:
    """`ray start`, run by this interpreter through the loopback launcher."""
    return [sys.executable, "-c", _LAUNCHER, "start"]


def _resource_args(num_cpus: float, num_gpus: float, resources: Mapping[str, float] | None) -> list[str]:
    args = [f"--num-cpus={_whole(num_cpus, 'num_cpus')}", f"--num-gpus={_whole(num_gpus, 'num_gpus')}"]
    if resources:
        args.append(f"--resources={json.dumps(dict(resources))}")
    return args


def _whole(value: float, name: str) -> int:
    # `ray start` takes whole CPUs and GPUs only (fractions are for custom resources).
    if value < 0 or value != int(value):
        raise ValueError(f"{name} must be a whole number >= 0, got {value}")
    return int(value)


def _labels_arg(name: str, labels: Mapping[str, str] | None) -> str:
    """`--labels`: the node's own name label plus the caller's (e.g. the cluster and group it serves)."""
    pairs = {**(labels or {}), NODE_LABEL: name}
    for k, v in pairs.items():
        if "," in k + v or "=" in k + v:
            raise ValueError(f"a node label cannot contain ',' or '=': {k}={v}")
    return "--labels=" + ",".join(f"{k}={v}" for k, v in pairs.items())


def _log_tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no start log)"
    return "\n".join(lines[-n:])


def node_environment(temp_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a `ray start` process: ours, minus what only drivers may carry.

    A process that is also a driver (a notebook kernel running the controller) has `DRIVER_ENV` set;
    inherited by `ray start`, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` makes the node refuse to join.
    """
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    full_env.update(env)
    full_env["RAY_USAGE_STATS_ENABLED"] = "0"
    full_env[NODE_ENV_MARKER] = str(temp_dir)
    return full_env


def _spawn(args: list[str], temp_dir: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    full_env = node_environment(temp_dir, env)
    with open(temp_dir / START_LOG_NAME, "ab") as log:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            cwd=temp_dir,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=1):
            return True
    except OSError:
        return False


def _start_and_wait(
    args: list[str],
    temp_dir: Path,
    env: Mapping[str, str],
    dashboard_url: str,
    node_name: str,
    ports: HeadPorts | WorkerPorts,
    agent_ports: tuple[int, ...],
    timeout_s: float,
) -> tuple[int, dict[str, Any]]:
    """Spawn `ray start --block`, note its pid and ports in the temp dir, and wait until it is up."""
    proc = _spawn(args, temp_dir, env)
    spawn = {"pid": proc.pid, "ports": asdict(ports)}
    (temp_dir / SPAWN_FILE_NAME).write_text(json.dumps(spawn))
    try:
        node = _wait_up(proc.pid, dashboard_url, node_name, agent_ports, timeout_s)
    except BaseException as e:
        _kill_node(proc.pid, temp_dir)
        if isinstance(e, LocalRayError):
            log = temp_dir / START_LOG_NAME
            raise LocalRayError(f"{e}\n--- {log} ---\n{_log_tail(log)}") from e
        raise
    return proc.pid, node


def _wait_up(
    pid: int, dashboard_url: str, node_name: str, agent_ports: tuple[int, ...], timeout_s: float
) -> dict[str, Any]:
    """Wait for ALIVE, then for the node's agent ports to accept; LocalRayError if it never is.

    The GCS lists a node ALIVE when its raylet registers; the dashboard agent (metrics export, log
    and state endpoints) comes up a few seconds later, and callers expect a started node to be
    scrapeable.
    """
    started = time.monotonic()
    node = wait_for_node(dashboard_url, node_name, "ALIVE", timeout_s, pid=pid)
    for port in agent_ports:
        while not _port_open(port):
            if not is_running(pid):
                raise LocalRayError(f"ray start (pid {pid}) exited before port {port} opened")
            if time.monotonic() - started > timeout_s:
                raise LocalRayError(f"node {node_name}: port {port} not open after {timeout_s:.0f} s")
            time.sleep(0.1)
    return node


def start_head(
    *,
    num_cpus: float = 1,
    num_gpus: float = 0,
    resources: Mapping[str, float] | None = None,
    labels: Mapping[str, str] | None = None,
    temp_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    object_store_memory: int | None = None,
    extra_args: list[str] | None = None,
    timeout_s: float = 90.0,
    attempts: int = 2,
) -> LocalHead:
    """Start a head with dashboard and metrics export on loopback; return once it is ALIVE.

    A start that fails (a free port taken meanwhile, most often) is retried on new ports, `attempts`
    times in all. The temp dir is created when not given and is not removed by `stop_head`.
    """
    last: LocalRayError | None = None
    for _ in range(max(1, attempts)):
        tdir = temp_dir if temp_dir is not None else make_temp_dir("rayops-h-")
        tdir.mkdir(parents=True, exist_ok=True)
        ports = HeadPorts.allocate()
        name = _label_value(tdir.name)
        args = [
            *_ray_start_command(),
            "--head",
            "--block",
            f"--node-ip-address={LOCALHOST}",
            f"--port={ports.gcs}",
            "--include-dashboard=true",
            f"--dashboard-host={LOCALHOST}",
            f"--dashboard-port={ports.dashboard}",
            f"--metrics-export-port={ports.metrics_export}",
            f"--ray-client-server-port={ports.client_server}",
            f"--dashboard-agent-listen-port={ports.dashboard_agent_listen}",
            f"--dashboard-agent-grpc-port={ports.dashboard_agent_grpc}",
            f"--runtime-env-agent-port={ports.runtime_env_agent}",
            f"--temp-dir={tdir}",
            _labels_arg(name, labels),
            "--disable-usage-stats",
            *_resource_args(num_cpus, num_gpus, resources),
        ]
        if object_store_memory is not None:
            args.append(f"--object-store-memory={object_store_memory}")
        args += extra_args or []
        node_env = dict(env or {})
        # Fixed by default (44217, 44227): two heads on one host would collide.
        node_env["AUTOSCALER_METRIC_PORT"] = str(ports.autoscaler_metrics)
        node_env["DASHBOARD_METRIC_PORT"] = str(ports.dashboard_metrics)
        try:
            pid, node = _start_and_wait(
                args,
                tdir,
                node_env,
                f"http://{LOCALHOST}:{ports.dashboard}",
                name,
                ports,
                (ports.metrics_export, ports.dashboard_agent_listen),
                timeout_s,
            )
        except LocalRayError as e:
            last = e
            if temp_dir is None:  # ours, and the error already carries the start log's tail
                shutil.rmtree(tdir, ignore_errors=True)
            continue
        return LocalHead(
            pid=pid,
            temp_dir=tdir,
            ports=ports,
            node_id=str(node["node_id"]),
            node_name=name,
            num_cpus=float(num_cpus),
            num_gpus=float(num_gpus),
            resources=dict(resources or {}),
        )
    assert last is not None
    raise last


def start_worker(
    head: LocalHead,
    *,
    num_cpus: float = 1,
    num_gpus: float = 0,
    resources: Mapping[str, float] | None = None,
    labels: Mapping[str, str] | None = None,
    temp_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    object_store_memory: int | None = None,
    extra_args: list[str] | None = None,
    timeout_s: float = 60.0,
    attempts: int = 2,
) -> LocalWorker:
    """Join a worker node to `head`; return once the dashboard lists it ALIVE.

    Each worker has its own temp dir and ports, so several may start at the same time.
    """
    last: LocalRayError | None = None
    for _ in range(max(1, attempts)):
        tdir = temp_dir if temp_dir is not None else make_temp_dir("rayops-w-")
        tdir.mkdir(parents=True, exist_ok=True)
        ports = WorkerPorts.allocate()
        name = _label_value(tdir.name)
        args = [
            *_ray_start_command(),
            "--block",
            f"--address={head.gcs_address}",
            f"--node-ip-address={LOCALHOST}",
            f"--metrics-export-port={ports.metrics_export}",
            f"--dashboard-agent-listen-port={ports.dashboard_agent_listen}",
            f"--dashboard-agent-grpc-port={ports.dashboard_agent_grpc}",
            f"--runtime-env-agent-port={ports.runtime_env_agent}",
            f"--temp-dir={tdir}",
            _labels_arg(name, labels),
            "--disable-usage-stats",
            *_resource_args(num_cpus, num_gpus, resources),
        ]
        if object_store_memory is not None:
            args.append(f"--object-store-memory={object_store_memory}")
        args += extra_args or []
        try:
            pid, node = _start_and_wait(
                args,
                tdir,
                env or {},
                head.dashboard_url,
                name,
                ports,
                (ports.metrics_export, ports.dashboard_agent_listen),
                timeout_s,
            )
        except LocalRayError as e:
            last = e
            if temp_dir is None:  # ours, and the error already carries the start log's tail
                shutil.rmtree(tdir, ignore_errors=True)
            continue
        return _worker(head, pid, tdir, ports, node, num_cpus, num_gpus, resources)
    assert last is not None
    raise last


def adopt_worker(
    head: LocalHead,
    temp_dir: Path,
    *,
    num_cpus: float,
    num_gpus: float,
    resources: Mapping[str, float] | None = None,
    timeout_s: float = 60.0,
) -> LocalWorker | None:
    """The worker in `temp_dir` whose starter died mid-start, once it is up; None if it cannot be.

    `ray start --block` runs in its own session, so it outlives a controller killed while waiting
    for it, and once registered the node may already run tasks: killing it would fail them. This
    waits for it as `start_worker` would have. None when it never spawned, has exited, or does not
    come up in `timeout_s`; whatever is left of it is then the caller's to kill (`kill_marked`).
    """
    try:
        spawn = json.loads((temp_dir / SPAWN_FILE_NAME).read_text())
        pid, ports = int(spawn["pid"]), WorkerPorts(**spawn["ports"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (is_running(pid) and _references(pid, temp_dir)):
        return None
    name = _label_value(temp_dir.name)
    try:
        node = _wait_up(
            pid, head.dashboard_url, name, (ports.metrics_export, ports.dashboard_agent_listen), timeout_s
        )
    except LocalRayError:
        return None
    return _worker(head, pid, temp_dir, ports, node, num_cpus, num_gpus, resources)


def _worker(
    head: LocalHead,
    pid: int,
    temp_dir: Path,
    ports: WorkerPorts,
    node: Mapping[str, Any],
    num_cpus: float,
    num_gpus: float,
    resources: Mapping[str, float] | None,
) -> LocalWorker:
    """The worker as started (or adopted): its processes, ports and the node Ray registered."""
    return LocalWorker(
        pid=pid,
        temp_dir=temp_dir,
        ports=ports,
        node_id=str(node["node_id"]),
        node_name=_label_value(temp_dir.name),
        gcs_address=head.gcs_address,
        dashboard_url=head.dashboard_url,
        num_cpus=float(num_cpus),
        num_gpus=float(num_gpus),
        resources=dict(resources or {}),
    )


def stop_worker(worker: LocalWorker, timeout_s: float = 45.0, leftover_grace_s: float = 10.0) -> StopReport:
    """Stop a worker the way Ray expects: SIGTERM to its `ray start --block`, which drains the node.

    Ray waits for running tasks up to RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (30 s by default), hence
    the timeout above it. After `timeout_s` the node's process group and every process carrying its
    marker are SIGKILLed. Safe to call twice, and on a node started by another process.
    """
    return _stop_node(worker.pid, worker.temp_dir, timeout_s, leftover_grace_s)


def stop_head(head: LocalHead, timeout_s: float = 30.0, leftover_grace_s: float = 10.0) -> StopReport:
    """Stop a head (and with it the cluster's GCS): SIGTERM, wait, then SIGKILL what is left.

    Workers still attached lose their GCS and exit on their own after a while; stop them first.
    """
    return _stop_node(head.pid, head.temp_dir, timeout_s, leftover_grace_s)


@contextlib.contextmanager
def running_head(**kwargs: Any) -> Iterator[LocalHead]:
    """`start_head` for a `with` block; the head is stopped on exit, whatever happened."""
    head = start_head(**kwargs)
    try:
        yield head
    finally:
        stop_head(head)
