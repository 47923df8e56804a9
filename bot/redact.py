"""One redaction function for everything the bot writes: logs, audit records and chat messages.

Tokens reach text in ways nobody plans: a user pastes one into a command, an SDK error quotes a
request header, an exception carries a URL. So every output path goes through `redact`, and the
composition root installs `install_log_redaction` once, which redacts every log record of every
logger at creation (a record factory; a filter on the root logger alone would miss records that
propagate from child loggers) and adds a filter to the root handlers for records made elsewhere.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "[REDACTED]"

_PATTERNS: tuple[re.Pattern[str], ...] = (
    # Slack: bot/user/app/refresh tokens and their configuration-token forms (xoxe.xoxp-...).
    re.compile(r"\bxox[a-z]?(?:\.xox[a-z]?)?-[A-Za-z0-9-]{6,}"),
    re.compile(r"\bxapp-[A-Za-z0-9-]{6,}"),
    # Matrix: Synapse access tokens (syt_<user>_<random>_<crc>) and MAS tokens (mat_, mct_).
    re.compile(r"\bsy[a-z]_[A-Za-z0-9_]{8,}"),
    re.compile(r"\bm[ac]t_[A-Za-z0-9_]{8,}"),
    # JSON Web Tokens (Kubernetes service-account and OIDC tokens: the notebook path).
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}"),
    # HTTP credentials anywhere in text.
    re.compile(r"(?i)\bauthorization\s*[:=]\s*[^\r\n]+"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"(?i)\b(access_token|password|secret|token)=([^\s&\"']+)"),
)


class Redactor:
    """The patterns above plus exact secret values this process was configured with (tokens from
    the environment, a signing secret): those may have any shape, so they are matched literally."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        # Very short values would mask ordinary words; no real secret is that short.
        new = {s for s in secrets if s and len(s) >= 6}
        with self._lock:
            self._secrets = tuple(sorted(set(self._secrets) | new, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(_mask_match, text)
        return text


def _mask_match(m: re.Match[str]) -> str:
    whole = m.group(0)
    low = whole.lower()
    if low.startswith("authorization"):
        sep = re.search(r"[:=]\s*", whole)
        return whole[: sep.end()] + MASK if sep else MASK
    if low.startswith("bearer"):
        return whole.split(None, 1)[0] + " " + MASK
    if m.re.groups == 2:  # key=value
        return f"{m.group(1)}={MASK}"
    return MASK


DEFAULT = Redactor()


def redact(text: str) -> str:
    """Mask every token and configured secret in `text` (the process-wide redactor)."""
    return DEFAULT(text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (arguments merged in) and its exception text, redacted."""

    def __init__(self, redactor: Redactor = DEFAULT) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record, self.redactor)
        return True


def _redact_record(record: logging.LogRecord, redactor: Redactor) -> None:
    if getattr(record, "_rayops_redacted", False):
        return
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a bad format string: keep the pieces, redacted
        message = f"{record.msg!s} {record.args!r}"
    record.msg, record.args = redactor(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = redactor(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redactor(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor(record.stack_info)
    record._rayops_redacted = True


_installed = False


def install_log_redaction(secrets: Iterable[str] = ()) -> Redactor:
    """Redact every log record of this process from now on; idempotent. Returns the redactor so
    the caller can add secrets learnt later (a token read after start-up)."""
    global _installed
    DEFAULT.add_secrets(secrets)
    if not _installed:
        previous = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record, DEFAULT)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
    root = logging.getLogger()
    flt = RedactingFilter(DEFAULT)
    root.addFilter(flt)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return DEFAULT
