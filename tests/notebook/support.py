"""What the notebook API tests share: the policy set, a chat bot over the same backend, a TTY stream."""

from __future__ import annotations

import io
import re
from pathlib import Path

from bot.approvals import MemoryApprovalStore
from bot.audit import MemoryAuditLog
from bot.core import Bot
from bot.switch import MemoryPauseSwitch

POLICIES = Path(__file__).parent / "fixtures" / "policies"
REQUEST_ID = re.compile(r"`([a-z2-9]{8})`")


def chat_twin(bot: Bot) -> Bot:
    """A second bot over the same backend and policies with its own approval store: what chat would
    answer to the same command, without seeing the notebook's pending requests."""
    return Bot(
        bot.backend,
        bot.policies,
        MemoryApprovalStore(),
        MemoryAuditLog(),
        MemoryPauseSwitch(),
        bot.settings,
        history=bot.history,
        clock=bot.clock,
    )


def without_request_id(text: str) -> str:
    return REQUEST_ID.sub("`<id>`", text)


class Tty(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True
