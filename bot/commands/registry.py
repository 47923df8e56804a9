"""The explicit name-to-handler table (no discovery).

`confirm` and `cancel` are not in it: they re-run a remembered command through the whole pipeline,
which is the core's job (`bot.core.Bot`).
"""

from __future__ import annotations

from collections.abc import Callable

from bot.commands import control, info, lifecycle, requests
from bot.commands.context import Context, Outcome
from bot.commands.parser import ParsedCommand

Handler = Callable[[Context, ParsedCommand], Outcome]

HANDLERS: dict[str, Handler] = {
    "create": lifecycle.create,
    "list": info.list_clusters,
    "status": info.status,
    "scale": control.scale,
    "delete": lifecycle.delete,
    "extend": lifecycle.extend,
    "why": info.why,
    "pause": control.pause,
    "resume": control.resume,
    "policy": info.policy,
    "connect": info.connect,
    "approve": requests.approve,
    "deny": requests.deny,
    "pending": requests.pending,
    "pause-all": control.pause_all,
    "resume-all": control.resume_all,
    "release": lifecycle.release,
    "whoami": info.whoami,
    "help": info.help_command,
}
CORE_COMMANDS = ("confirm", "cancel")
