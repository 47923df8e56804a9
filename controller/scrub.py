"""Keep credentials out of everything the controller writes: decisions, annotations, events.

Log lines are redacted by the composition root (bot/redact.py, installed by `rayops controller run`),
but the controller also writes text that is not a log line: the reasons of decisions (annotations,
`why` in chat), Kubernetes Events, the laptop journal. Those carry upstream error messages, and an
upstream may echo a request header back (a proxy's 401 page quoting `Authorization`). So the causes
of unavailable samples are scrubbed as they enter the loop, and every event as it leaves it.

Masks the exact secret values this process holds (token files, token-like variables) and anything
shaped like a credential: `Authorization: ...`, `Bearer <token>`, `token=...`, `password=...`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import replace

from controller.domain import Sample
from controller.events import Event, EventSink

MASK = "[REDACTED]"
_PATTERNS = (
    re.compile(r"(?i)(\bauthorization\s*[:=]\s*)[^\r\n,;)'\"]+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"(?i)(\b(?:access_token|password|secret|token)=)[^\s&\"']+"),
)


class Scrubber:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        new = {s for s in secrets if s and len(s) >= 6}  # shorter values would mask ordinary words
        with self._lock:
            self._secrets = tuple(sorted(set(self._secrets) | new, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text

    def sample(self, s: Sample) -> Sample:
        if s.unavailable is None:
            return s
        clean = self(s.unavailable)
        return s if clean == s.unavailable else replace(s, unavailable=clean)


class ScrubbingSink:
    """An `EventSink` that scrubs each event's message and text data before passing it on."""

    def __init__(self, sink: EventSink, scrub: Scrubber) -> None:
        self.sink = sink
        self.scrub = scrub

    def publish(self, event: Event) -> None:
        data = {k: self.scrub(v) if isinstance(v, str) else v for k, v in event.data.items()}
        self.sink.publish(replace(event, message=self.scrub(event.message), data=data))
