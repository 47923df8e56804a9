"""A real Prometheus (Debian's binary) on loopback, scraping only what file_sd files list.

Targets come only from file_sd files, never static targets: Ray's head already writes one listing
every node (static targets for the same ports would count every series twice), and a benchmark's
synthetic exporter is described the same way, so every Prometheus here is configured one way.

`stop()` and `start()` keep the port and the data dir, so a test can take Prometheus away and bring
it back with its history, as an outage and recovery look to a metrics source.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.localray import LOCALHOST, free_ports
from tests.harness.ray import RayTestCluster

PROMETHEUS_BIN_ENV = "RAYOPS_PROMETHEUS_BIN"
DEFAULT_BIN = "/usr/bin/prometheus"


class PrometheusQueryError(RuntimeError):
    """Prometheus did not answer, or answered with an error status."""


def prometheus_binary() -> str:
    path = os.environ.get(PROMETHEUS_BIN_ENV) or shutil.which("prometheus") or DEFAULT_BIN
    if not Path(path).exists():
        raise RuntimeError(
            f"no Prometheus binary at {path}: install Debian's `prometheus` or set {PROMETHEUS_BIN_ENV}"
        )
    return path


class PrometheusServer:
    """One Prometheus process; `start()` waits for `/-/ready`, `stop()` goes by pid."""

    def __init__(
        self,
        sd_files: Sequence[Path],
        workdir: Path,
        job_name: str = "ray",
        scrape_interval_s: float = 1.0,
        port: int | None = None,
    ) -> None:
        self.sd_files = [Path(f) for f in sd_files]
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config_path = workdir / "prometheus.yml"
        self.log_path = workdir / "prometheus.log"
        self.job_name = job_name
        self.scrape_interval_s = scrape_interval_s
        self.port = port if port is not None else free_ports(1)[0]
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _write_config(self) -> None:
        interval = f"{int(self.scrape_interval_s * 1000)}ms"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {
                    "job_name": self.job_name,
                    "file_sd_configs": [{"files": [str(f) for f in self.sd_files], "refresh_interval": "1s"}],
                }
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 30.0) -> None:
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            prometheus_binary(),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            "--storage.tsdb.retention.time=1h",
            f"--web.listen-address={LOCALHOST}:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}:\n{self._log_tail()}")
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"prometheus not ready after {timeout_s} s:\n{self._log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, timeout_s: float = 30.0) -> None:
        self.stop()
        self.start(timeout_s)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return "(no log)"

    # ------------------------------------------------------------------ API

    def _get(self, path: str, params: dict[str, str] | None = None, timeout_s: float = 5.0) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise PrometheusQueryError(f"{path}: HTTP {e.code}: {e.read()[:500]!r}") from e
        except OSError as e:
            raise PrometheusQueryError(f"{path}: {e}") from e
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result list (`[{metric: {...}, value: [ts, "v"]}, ...]`)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        data = self._get("/api/v1/query", params)
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout_s: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll `promql` until `predicate(result)` holds (default: non-empty); fails with the last result."""
        deadline = time.monotonic() + timeout_s
        last: list[dict[str, Any]] | str = "(no answer)"
        while True:
            try:
                result = self.query(promql)
                if predicate(result):
                    return result
                last = result
            except PrometheusQueryError as e:
                last = str(e)
            if time.monotonic() >= deadline:
                raise AssertionError(f"{promql!r} not as expected after {timeout_s} s; last: {last}")
            time.sleep(0.25)

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (`/api/v1/targets`), with `discoveredLabels`, `health`, `scrapeUrl`."""
        data = self._get("/api/v1/targets", {"state": "active"})
        active: list[dict[str, Any]] = data["activeTargets"]
        return active


def start_prometheus(
    sd_files: Sequence[Path],
    workdir: Path | None = None,
    job_name: str = "ray",
    scrape_interval_s: float = 1.0,
) -> PrometheusServer:
    """A ready Prometheus scraping the targets listed in `sd_files` (files may appear later)."""
    wd = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="rayops-prom-"))
    server = PrometheusServer(sd_files, wd, job_name=job_name, scrape_interval_s=scrape_interval_s)
    server.start()
    return server


@pytest.fixture(scope="session")
def prometheus(
    ray_cluster: RayTestCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """Prometheus scraping the session's Ray cluster through the head's discovery file only."""
    server = start_prometheus([ray_cluster.sd_file], tmp_path_factory.mktemp("prometheus"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _prometheus_test_scope(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that stopped the shared Prometheus (fault injection) and failed before restarting it
    does not leave it down for the next test."""
    if "prometheus" not in request.fixturenames:
        yield
        return
    server: PrometheusServer = request.getfixturevalue("prometheus")
    yield
    if not server.is_running():
        server.start()


@pytest.fixture
def prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PrometheusServer]]:
    """`prometheus_factory(sd_files, job_name="ray", scrape_interval_s=1.0)`; stopped at test end."""
    servers: list[PrometheusServer] = []

    def make(
        sd_files: Sequence[Path], job_name: str = "ray", scrape_interval_s: float = 1.0
    ) -> PrometheusServer:
        server = start_prometheus(
            sd_files, tmp_path_factory.mktemp("prometheus"), job_name, scrape_interval_s
        )
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for s in servers:
            s.stop()
