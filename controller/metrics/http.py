"""HTTP settings shared by the sources: auth, TLS, bounded timeouts and retries, a bounded fan-out.

Bounds, and why: a tick must finish even when Prometheus or a dashboard hangs, so every source has one
`timeout_s` that bounds a whole fetch. Each HTTP attempt gets `timeout_s / (retries + 1)` as its
connect and read timeout; only connection failures and 502/503/504 are retried (quickly, no long
backoff), never a read timeout, so a slow upstream costs one attempt. Work that still runs past the
deadline (a server that trickles bytes) is abandoned by `run_bounded` and reported as a timeout; its
thread ends when its own socket timeout fires.

OpenShift: Thanos Querier and the dashboards behind an OAuth proxy want `Authorization: Bearer <token>`;
Ray's own token auth wants `x-ray-authorization: Bearer <token>`. Service-account tokens are rotated by
the kubelet, so a `token_file` is re-read (when its mtime changes) rather than read once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ReadTimeoutError
from urllib3.util.retry import Retry

__all__ = ["SERVICE_ACCOUNT_TOKEN", "HttpSettings", "TokenSource", "describe_error", "run_bounded"]

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SERVICE_ACCOUNT_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

K = TypeVar("K")
V = TypeVar("V")


class TokenSource:
    """A bearer token given directly or read from a file (re-read when the file changes)."""

    def __init__(self, token: str | None = None, token_file: str | None = None) -> None:
        self._token = token
        self._file = token_file
        self._cached: tuple[float, str] | None = None
        self._lock = threading.Lock()

    def get(self) -> str | None:
        if self._token is not None:
            return self._token
        if self._file is None:
            return None
        with self._lock:
            mtime = os.stat(self._file).st_mtime
            if self._cached is None or self._cached[0] != mtime:
                with open(self._file, encoding="utf-8") as f:
                    self._cached = (mtime, f.read().strip())
            return self._cached[1]


@dataclass(frozen=True)
class HttpSettings:
    """How a source talks HTTP. `ca_bundle` is a PEM path (e.g. the service CA on OpenShift);
    `verify=False` turns TLS verification off (never on a shared network)."""

    timeout_s: float = 5.0
    retries: int = 1
    bearer_token: str | None = None
    token_file: str | None = None
    auth_header: str = "Authorization"  # or "x-ray-authorization" for Ray's token auth
    ca_bundle: str | None = None
    verify: bool = True
    pool_size: int = 16
    # Proxies, netrc and CA variables from the environment are ignored unless asked for: the URLs
    # are in-cluster Services or loopback, and a stray HTTP_PROXY must not reroute them.
    trust_env: bool = False

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")

    @property
    def attempt_timeout_s(self) -> float:
        return self.timeout_s / (self.retries + 1)

    def tokens(self) -> TokenSource:
        return TokenSource(self.bearer_token, self.token_file)

    def retry(self) -> Retry:
        return Retry(
            total=self.retries,
            connect=self.retries,
            read=0,
            status=self.retries,
            other=0,
            backoff_factor=0.1,
            status_forcelist=(502, 503, 504),
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
            respect_retry_after_header=False,
        )

    def session(self) -> requests.Session:
        s = requests.Session()
        s.verify = self.ca_bundle if (self.verify and self.ca_bundle) else self.verify
        adapter = HTTPAdapter(max_retries=self.retry(), pool_connections=4, pool_maxsize=self.pool_size)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        s.trust_env = self.trust_env
        return s

    def headers(self, tokens: TokenSource) -> dict[str, str]:
        token = tokens.get()
        headers = {"Accept": "application/json"}
        if token:
            headers[self.auth_header] = f"Bearer {token}"
        return headers


class DeadlineExceeded(Exception):
    """The job did not finish within the fetch's deadline."""


def run_bounded(
    executor: ThreadPoolExecutor, jobs: Mapping[K, Callable[[], V]], deadline_s: float
) -> dict[K, V | BaseException]:
    """Run `jobs` on `executor`; whatever is not done after `deadline_s` becomes DeadlineExceeded.

    Exceptions are returned as values (sources turn them into "unavailable" samples). Jobs not yet
    started when the deadline passes are cancelled.
    """
    futures: dict[K, Future[V]] = {k: executor.submit(fn) for k, fn in jobs.items()}
    done, _ = wait(futures.values(), timeout=deadline_s)
    out: dict[K, V | BaseException] = {}
    for k, f in futures.items():
        if f in done:
            err = f.exception()
            out[k] = err if err is not None else f.result()
        else:
            f.cancel()
            out[k] = DeadlineExceeded(f"no answer within {deadline_s:.1f} s")
    return out


def describe_error(err: BaseException, timeout_s: float) -> str:
    """A short, stable reason for a failed request ("timeout after 2.0 s", "HTTP 500", ...)."""
    if isinstance(err, DeadlineExceeded | requests.Timeout) or _is_wrapped_timeout(err):
        return f"timeout after {timeout_s:.1f} s"
    if isinstance(err, requests.exceptions.SSLError):
        return f"TLS error: {_first_line(err)}"
    if isinstance(err, requests.ConnectionError):
        return f"cannot connect: {_first_line(err)}"
    if isinstance(err, requests.HTTPError) and err.response is not None:
        return f"HTTP {err.response.status_code}: {_body_excerpt(err.response)}"
    if isinstance(err, ValueError):  # json.JSONDecodeError included
        return f"garbage answer: {_first_line(err)}"
    return f"{type(err).__name__}: {_first_line(err)}"


def _is_wrapped_timeout(err: BaseException) -> bool:
    """A read timeout after urllib3's retries arrives as ConnectionError(MaxRetryError(ReadTimeoutError))."""
    inner = err.args[0] if isinstance(err, requests.ConnectionError) and err.args else None
    return isinstance(inner, MaxRetryError) and isinstance(inner.reason, TimeoutError | ReadTimeoutError)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _body_excerpt(resp: requests.Response) -> str:
    try:
        body = resp.text
    except Exception:  # a body that cannot be decoded is still an HTTP error worth reporting
        return "(unreadable body)"
    return " ".join(body.split())[:200] or "(empty body)"
