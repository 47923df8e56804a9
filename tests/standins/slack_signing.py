"""Sign requests the way Slack does (scheme `v0`), and send them to a loopback app byte for byte.

Why this exists: a bolt app (and later rayops' own HTTP front end) must answer a correctly signed request
200 and a wrongly signed or stale one 401. Tests therefore need to produce Slack's signature themselves:
`X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:<timestamp>:<raw body>")>` together with
`X-Slack-Request-Timestamp`. Slack's own scheme only checks that the timestamp is within 5 minutes; a
replayed request inside that window passes it. `SignedRequest` is frozen and `send()` can be called any
number of times with the identical bytes and headers, so a replay test ("the same request twice -> the
second is 401") can be written against whatever rayops adds on top.

Requests go through a urllib opener with no proxy handler, and only to loopback addresses: a stray
`HTTPS_PROXY` in the environment must not route test traffic off the host.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"

# Slack rejects (and asks apps to reject) requests whose timestamp is further than this from now.
MAX_CLOCK_SKEW_S = 300

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def signature(secret: str, body: bytes, timestamp: int | str) -> str:
    """`v0=` + hex HMAC-SHA256 over `v0:<timestamp>:<body>`, computed on the raw bytes as Slack does."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The two headers Slack adds to every request it sends to an app.

    `timestamp` defaults to now; pass an old one (e.g. `now - 600`) to build a stale request.
    """
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(secret, body, ts)}


@dataclass(frozen=True)
class HttpReply:
    """What a loopback server answered: status, headers (lower-cased names) and raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class SignedRequest:
    """One signed POST, frozen so it can be resent unchanged (replay tests)."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def send(self, timeout: float = 5.0) -> HttpReply:
        """POST exactly these bytes and headers; a 4xx/5xx comes back as a reply, not an exception."""
        return post(self.url, self.body, self.headers, timeout=timeout)


def signed_request(
    url: str,
    body: bytes,
    secret: str,
    *,
    timestamp: int | None = None,
    content_type: str = FORM_CONTENT_TYPE,
    extra_headers: Mapping[str, str] | None = None,
) -> SignedRequest:
    """A request signed with `secret` (the app's, or a wrong one to test the 401 path)."""
    headers = {"Content-Type": content_type, **sign(secret, body, timestamp)}
    if extra_headers:
        headers.update(extra_headers)
    return SignedRequest(url=url, body=body, headers=headers)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float = 5.0) -> HttpReply:
    """POST to a loopback URL without any proxy; refuses any other host."""
    host = urlsplit(url).hostname
    if host not in _LOOPBACK_HOSTS:
        raise ValueError(f"test traffic must stay on loopback, refusing {url!r}")
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return HttpReply(
                status=response.status,
                headers={k.lower(): v for k, v in response.headers.items()},
                body=response.read(),
            )
    except urllib.error.HTTPError as error:
        with error:
            return HttpReply(
                status=error.code,
                headers={k.lower(): v for k, v in error.headers.items()},
                body=error.read(),
            )
