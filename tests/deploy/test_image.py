"""The image recipe: UBI 9 Python 3.11, runtime dependencies only (no `ray`), non-root, no secrets; and the
installed package itself runs as OpenShift's restricted-v2 would run it (arbitrary UID, group 0, HOME not
writable, no `ray` importable).

Building the image needs podman/buildah/docker and a registry, which the test machines do not have; the
recipe is checked statically and the package is exercised in the conditions the image creates: the command
line answers `--help`, and both long-running roles (`rayops controller run`, `rayops bot run`) start and
answer their liveness probe `GET /healthz` with 200, all as an arbitrary UID with group 0, a read-only HOME
and no importable `ray`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.deploy.manifests import DEPLOY, REPO

CONTAINERFILE = DEPLOY / "Containerfile"
IGNOREFILE = DEPLOY / "Containerfile.dockerignore"
RUNTIME_LOCK = DEPLOY / "requirements-runtime.lock"
LAPTOP_LOCK = DEPLOY / "laptop" / "requirements.lock"
# OpenShift gives each namespace a UID range like 1000770000/10000 and runs pods with group 0.
ARBITRARY_UID = 1000770000

_PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)", re.M)


def _pins(path: Path) -> dict[str, str]:
    return {_norm(name): version for name, version in _PIN.findall(path.read_text())}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _instructions():
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


# ----- the dependency lock -----


def test_runtime_lock_has_no_ray_and_no_tooling() -> None:
    pins = _pins(RUNTIME_LOCK)
    assert pins, "the lock pins every package"
    forbidden = {
        "ray",
        "pytest",
        "hypothesis",
        "matrix-synapse",
        "ruff",
        "mypy",
        "kubernetes-validate",
        "ipykernel",
    }
    assert forbidden.isdisjoint(pins)


def test_runtime_lock_covers_every_runtime_dependency_at_the_laptop_versions() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_norm(re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    runtime = _pins(RUNTIME_LOCK)
    assert declared <= set(runtime), f"missing from the runtime lock: {sorted(declared - set(runtime))}"
    laptop = _pins(LAPTOP_LOCK)
    differing = {n: (v, laptop.get(n)) for n, v in runtime.items() if laptop.get(n) != v}
    assert differing == {}, "regenerate deploy/requirements-runtime.lock (docs/deploy.md, 'Image')"


def test_runtime_lock_is_hashed_for_require_hashes() -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9])", RUNTIME_LOCK.read_text())
    requirements = [b for b in blocks if _PIN.match(b)]
    assert len(requirements) == len(_pins(RUNTIME_LOCK))
    assert all("--hash=sha256:" in b for b in requirements)


# ----- the recipe -----


def test_containerfile_base_user_entrypoint_and_install() -> None:
    steps = _instructions()
    (arg_base,) = [rest for word, rest in steps if word == "ARG" and rest.startswith("BASE_IMAGE=")]
    assert arg_base.split("=", 1)[1].startswith("registry.access.redhat.com/ubi9/python-311")
    assert [rest for word, rest in steps if word == "FROM"] == ["${BASE_IMAGE}"]
    users = [rest for word, rest in steps if word == "USER"]
    assert users[-1].isdigit() and int(users[-1]) != 0, (
        "numeric, non-root final user (runAsNonRoot can check it)"
    )
    assert steps[-2:] == [("ENTRYPOINT", '["/opt/app-root/bin/rayops"]'), ("CMD", '["--help"]')]
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "--require-hashes" in runs and "-r /tmp/rayops-build/deploy/requirements-runtime.lock" in runs
    assert runs.count("--no-deps") == 2, "only the lock brings dependencies: never the `local` extra"
    assert "[local]" not in runs and "compileall" in runs


def test_containerfile_keeps_caches_off_home_and_bakes_no_secret() -> None:
    env = _image_env()
    for var in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_STATE_HOME", "RAYOPS_STATE_DIR"):
        assert env[var].startswith("/tmp/"), var
    assert "HOME" not in env, (
        "never depend on HOME: the UID has no passwd entry and the filesystem is read-only"
    )
    for word, rest in _instructions():
        if word in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"TOKEN|SECRET|PASSWORD|xox[abp]-", rest, re.I), rest


def test_build_context_holds_what_the_recipe_copies_and_nothing_else() -> None:
    copied = [rest.split()[1:-1] for word, rest in _instructions() if word == "COPY"]
    sources = {s for group in copied for s in group if not s.startswith("--")}
    assert sources == {"deploy/requirements-runtime.lock", "pyproject.toml", "README.md", "controller", "bot"}
    rules = [line for line in IGNOREFILE.read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == sources


# ----- the installed package under restricted-v2 conditions -----


def _world_executable(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _rayops_command() -> list[str]:
    """How an arbitrary UID starts the installed console script.

    The venv's interpreter may live under a private directory (pyenv in /root here); then the same installed
    package (the venv's site-packages, editable finder included) runs on the system's CPython with the same
    ABI, through the console script's own entry point.
    """
    script = Path(sys.prefix) / "bin" / "rayops"
    if _world_executable(Path(os.path.realpath(sys.executable))) and _world_executable(script):
        return [str(script)]
    (entry,) = entry_points(group="console_scripts", name="rayops")
    module, _, func = entry.value.partition(":")
    soabi = sysconfig.get_config_var("SOABI")
    site = sysconfig.get_paths()["purelib"]
    for candidate in ("/usr/bin/python3.11", "/usr/local/bin/python3.11"):
        path = Path(candidate)
        if not path.exists() or not _world_executable(path.resolve()):
            continue
        probe = [candidate, "-c", "import sysconfig; print(sysconfig.get_config_var('SOABI'))"]
        if subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip() == soabi:
            code = (
                f"import site, sys; site.addsitedir({site!r}); from {module} import {func}; "
                f"sys.argv[0] = 'rayops'; sys.exit({func}())"
            )
            return [candidate, "-s", "-c", code]
    pytest.fail(
        f"no interpreter an arbitrary UID may run with ABI {soabi}: make the venv's python world-readable"
    )


@pytest.fixture
def restricted_dirs() -> Iterator[tuple[Path, Path]]:
    """(HOME, shadow): a root-owned read-only HOME, and a path entry whose `ray` import always fails."""
    base = Path(tempfile.mkdtemp(prefix="rayops-restricted-"))
    try:
        home, shadow = base / "home", base / "no-ray"
        home.mkdir()
        shadow.mkdir()
        (shadow / "ray.py").write_text("raise ImportError('the rayops image has no ray package')\n")
        for p in (base, home, shadow):
            p.chmod(0o555 if p == home else 0o755)
        yield home, shadow
    finally:
        home.chmod(0o755)
        shutil.rmtree(base)


@pytest.mark.parametrize("argv", [["--help"], ["controller", "run", "--help"], ["bot", "run", "--help"]])
def test_cli_runs_as_an_arbitrary_uid_without_home_or_ray(
    argv: list[str], restricted_dirs: tuple[Path, Path]
) -> None:
    home, shadow = restricted_dirs
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": str(shadow),
        "PYTHONDONTWRITEBYTECODE": "1",
        **{k: v for k, v in _image_env().items() if k != "PYTHONDONTWRITEBYTECODE"},
    }
    as_uid = {"user": ARBITRARY_UID, "group": 0, "extra_groups": []} if os.geteuid() == 0 else {}
    if not as_uid:
        assert os.geteuid() != 0  # not root: the tests already run as a non-root UID
    proc = subprocess.run(
        [*_rayops_command(), *argv],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **as_uid,  # type: ignore[call-overload]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("usage: rayops"), proc.stdout
    assert "Traceback" not in proc.stderr
    assert list(home.iterdir()) == [], "nothing may be written to HOME"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthz(port: int, proc: subprocess.Popen[str], timeout_s: float = 90.0) -> tuple[int, str]:
    """The first answer of GET /healthz, waiting for the process to bind (it must not exit meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode} before answering /healthz"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing answered on 127.0.0.1:{port} within {timeout_s:.0f} s")


# The controller on laptop mode's local backend (no API server needed, nothing started until a cluster is
# asked for); the bot's console adapter on the memory backend (no chat platform needed). In the pod they
# run `controller run` (kuberay) and `bot run --adapter slack|matrix`, whose settings need credentials; the
# process start-up, imports, writable paths and the health server are the same code.
HEALTH_COMMANDS = {
    "controller": ["controller", "run", "--backend", "local"],
    "bot": ["bot", "run", "--adapter", "console", "--backend", "memory"],
}


@pytest.mark.parametrize("role", sorted(HEALTH_COMMANDS))
def test_healthz_answers_as_an_arbitrary_uid_without_home_or_ray(
    role: str, restricted_dirs: tuple[Path, Path]
) -> None:
    home, shadow = restricted_dirs
    state = Path(tempfile.mkdtemp(prefix="rayops-state-"))
    as_uid = {"user": ARBITRARY_UID, "group": 0, "extra_groups": []} if os.geteuid() == 0 else {}
    if as_uid:
        os.chown(state, ARBITRARY_UID, 0)
    port = _free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": str(shadow),
        "PYTHONDONTWRITEBYTECODE": "1",
        **{k: v for k, v in _image_env().items() if k != "PYTHONDONTWRITEBYTECODE"},
        "RAYOPS_STATE_DIR": str(state),  # the image's /tmp/rayops, one per test
        "RAYOPS_HTTP_PORT": str(port),
        "RAYOPS_HTTP_HOST": "127.0.0.1",
        "RAYOPS_POLICY_DIR": str(REPO / "tests" / "bot" / "fixtures" / "policies"),
        "RAYOPS_CONSOLE_USER": "alice",
    }
    proc = subprocess.Popen(
        [*_rayops_command(), *HEALTH_COMMANDS[role]],
        env=env,
        cwd="/",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **as_uid,  # type: ignore[call-overload]
    )
    try:
        code, body = _healthz(port, proc)
    finally:
        if role == "controller":
            proc.send_signal(signal.SIGTERM)  # as the kubelet stops a pod
        out, err = proc.communicate(timeout=60)  # closes stdin: end of input stops the console adapter
        shutil.rmtree(state, ignore_errors=True)
    assert (code, body.startswith("ok")) == (200, True), body
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err, err
    assert list(home.iterdir()) == [], "nothing may be written to HOME"


def test_the_ray_shadow_really_blocks_ray(restricted_dirs: tuple[Path, Path]) -> None:
    """The check above is only meaningful if `import ray` fails for the child."""
    _, shadow = restricted_dirs
    code = "import ray"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(shadow)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "no ray package" in proc.stderr
