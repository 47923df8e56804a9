"""The command language in one table: names, parameters, usage and help, who may run what.

Every adapter, the parser, `help`, the confirmation rule and docs/chatops.md read this table, so a
command is described once. Handlers are bound to names in `bot.commands.HANDLERS`; a test checks
that both tables name the same commands and that the doc lists every one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """How a parameter's text is checked and converted."""

    CLUSTER = "cluster"  # a cluster name, or NAMESPACE/NAME
    COUNT = "count"  # a whole number in [0, max_value]
    DURATION = "duration"  # 90s, 15m, 4h, 2d, 1h30m
    REQUEST_ID = "request-id"  # an approval or confirmation id
    COMMAND = "command"  # a command name (help's topic)
    DNS_NAME = "dns-name"  # a profile or worker-group name
    NAMESPACE = "namespace"
    TEXT = "text"  # the rest of the line, free text (a denial's reason)


class Access(StrEnum):
    """Who may run a command; checked by `bot.authz` before any handler runs."""

    ANYONE = "anyone"  # even a person no access rule names (help, whoami)
    MEMBER = "member"  # anyone an access rule or the approver list names
    OWNER = "owner"  # the cluster's requester, or DevOps for its namespace
    APPROVER = "approver"
    DEVOPS = "devops"


@dataclass(frozen=True)
class Param:
    name: str  # positional: the usage word (NAME); option: the key (workers)
    kind: Kind
    required: bool = True
    max_value: int = 0  # COUNT only
    help: str = ""

    @property
    def key(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class CommandSpec:
    name: str
    summary: str
    help: str
    params: tuple[Param, ...] = ()
    options: tuple[Param, ...] = ()
    access: Access = Access.MEMBER
    mutates: bool = False  # changes something: audited
    examples: tuple[str, ...] = ()

    @property
    def usage(self) -> str:
        parts = [self.name]
        for p in self.params:
            word = f"{p.name}..." if p.kind is Kind.TEXT else p.name
            parts.append(word if p.required else f"[{word}]")
        for o in self.options:
            parts.append(f"[{o.name}={_placeholder(o)}]")
        return " ".join(parts)

    def option(self, key: str) -> Param | None:
        return next((o for o in self.options if o.name == key), None)


def _placeholder(p: Param) -> str:
    return {
        Kind.COUNT: "N",
        Kind.DURATION: "DURATION",
        Kind.NAMESPACE: "NS",
        Kind.DNS_NAME: p.name.upper(),
    }.get(p.kind, p.name.upper())


MAX_WORKERS = 1000
MAX_GPUS = 256
MAX_DURATION_DAYS = 365

_NS = Param("namespace", Kind.NAMESPACE, required=False, help="which namespace the cluster is in")
_NAME = Param("NAME", Kind.CLUSTER, help="the cluster's name, or NAMESPACE/NAME")


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "create",
        "request a Ray cluster",
        "Creates a Ray cluster from a profile (default: the first your access rule allows). Over "
        "your limits, the request waits for an approver instead.",
        (_NAME,),
        (
            Param("profile", Kind.DNS_NAME, False, help="which ClusterProfile"),
            Param("workers", Kind.COUNT, False, MAX_WORKERS, "CPU workers to start with"),
            Param("gpus", Kind.COUNT, False, MAX_GPUS, "GPU workers to start with"),
            Param("ttl", Kind.DURATION, False, help="time to live, e.g. 8h"),
            _NS,
        ),
        mutates=True,
        examples=("create demo", "create train profile=gpu gpus=1 ttl=4h"),
    ),
    CommandSpec(
        "list",
        "list the clusters you can see",
        "Lists clusters in the namespaces you may use, with state, workers and time left.",
        options=(_NS,),
        examples=("list", "list namespace=ray-nlp"),
    ),
    CommandSpec(
        "status",
        "state, workers, demand, last decision, time left",
        "Shows one cluster: state, workers ready/desired per group, resources, the last scaling "
        "decision and its reason, time left and how to connect.",
        (_NAME,),
        (_NS,),
        examples=("status demo",),
    ),
    CommandSpec(
        "scale",
        "pin a worker count until resume or expiry",
        "Pins a worker group at N workers: the controller keeps it there instead of autoscaling "
        "until `resume`, or until the pin expires (default: when the cluster expires, at most 24h). "
        "Scaling to 0 asks for confirmation.",
        (_NAME, Param("N", Kind.COUNT, True, MAX_WORKERS, "workers to keep")),
        (
            Param("group", Kind.DNS_NAME, False, help="which worker group (default: the first)"),
            Param("for", Kind.DURATION, False, help="how long the pin holds"),
            _NS,
        ),
        access=Access.OWNER,
        mutates=True,
        examples=("scale demo 4", "scale demo 2 group=gpu for=2h"),
    ),
    CommandSpec(
        "delete",
        "delete a cluster (asks to confirm)",
        "Deletes a cluster and everything in it. Asks for confirmation.",
        (_NAME,),
        (_NS,),
        access=Access.OWNER,
        mutates=True,
        examples=("delete demo",),
    ),
    CommandSpec(
        "extend",
        "give a cluster more time",
        "Moves the cluster's expiry later by DURATION (from now if it has already passed).",
        (_NAME, Param("DURATION", Kind.DURATION, help="e.g. 4h")),
        (_NS,),
        access=Access.OWNER,
        mutates=True,
        examples=("extend demo 4h",),
    ),
    CommandSpec(
        "why",
        "recent scaling decisions and their reasons",
        "Shows the last scaling decisions for a cluster and why each was taken (or why it held).",
        (_NAME,),
        (_NS,),
        examples=("why demo",),
    ),
    CommandSpec(
        "pause",
        "stop autoscaling one cluster",
        "Stops the controller from changing this cluster's workers until `resume`.",
        (_NAME,),
        (_NS,),
        access=Access.OWNER,
        mutates=True,
        examples=("pause demo",),
    ),
    CommandSpec(
        "resume",
        "resume autoscaling (ends a pause and a pin)",
        "Lets the controller autoscale this cluster again: removes a pause and a `scale` pin.",
        (_NAME,),
        (_NS,),
        access=Access.OWNER,
        mutates=True,
        examples=("resume demo",),
    ),
    CommandSpec(
        "policy",
        "which scaling policy applies and its numbers",
        "Names the scaling policy for each worker group and its key numbers: bounds, signals, "
        "scale-down delay, budget, schedules.",
        (_NAME,),
        (_NS,),
        examples=("policy demo",),
    ),
    CommandSpec(
        "connect",
        "Ray client address and dashboard link",
        "Shows the address for `ray.init(...)`, the dashboard and the job submission URL.",
        (_NAME,),
        (_NS,),
        examples=("connect demo",),
    ),
    CommandSpec(
        "approve",
        "approve a pending request (approvers)",
        "Approves a request that was over its requester's limits, and carries it out.",
        (Param("ID", Kind.REQUEST_ID),),
        access=Access.APPROVER,
        mutates=True,
        examples=("approve k3j2mq7x",),
    ),
    CommandSpec(
        "deny",
        "deny a pending request (approvers)",
        "Denies a pending request; the requester is told, with the reason if given.",
        (Param("ID", Kind.REQUEST_ID), Param("REASON", Kind.TEXT, required=False)),
        access=Access.APPROVER,
        mutates=True,
        examples=("deny k3j2mq7x too many GPUs this week",),
    ),
    CommandSpec(
        "pending",
        "requests waiting for approval",
        "Lists pending requests: all of them for approvers, your own otherwise.",
        examples=("pending",),
    ),
    CommandSpec(
        "confirm",
        "confirm the destructive command you just asked for",
        "Confirms your latest destructive command (or the one with this id). Only the person who "
        "asked can confirm, within a few minutes.",
        (Param("ID", Kind.REQUEST_ID, required=False),),
        mutates=True,
        examples=("confirm",),
    ),
    CommandSpec(
        "cancel",
        "cancel a command waiting for confirmation",
        "Drops your latest command waiting for confirmation (or the one with this id).",
        (Param("ID", Kind.REQUEST_ID, required=False),),
        examples=("cancel",),
    ),
    CommandSpec(
        "pause-all",
        "stop all autoscaling (DevOps)",
        "Global switch: the controller changes no cluster until `resume-all`.",
        access=Access.DEVOPS,
        mutates=True,
        examples=("pause-all",),
    ),
    CommandSpec(
        "resume-all",
        "resume all autoscaling (DevOps)",
        "Turns the global switch off again; per-cluster pauses and pins stay.",
        access=Access.DEVOPS,
        mutates=True,
        examples=("resume-all",),
    ),
    CommandSpec(
        "release",
        "hand a cluster back to its owner (DevOps; asks to confirm)",
        "rayops stops managing the cluster: it clears pending worker removals and removes every "
        "rayops annotation and label. The cluster keeps running. Asks for confirmation.",
        (_NAME,),
        (_NS,),
        access=Access.DEVOPS,
        mutates=True,
        examples=("release legacy-train",),
    ),
    CommandSpec(
        "whoami",
        "who the bot thinks you are and what you may do",
        "Shows your identity as access rules name it, your namespaces, profiles, limits and roles.",
        access=Access.ANYONE,
        examples=("whoami",),
    ),
    CommandSpec(
        "help",
        "this list, or one command's usage",
        "Lists the commands, or explains one.",
        (Param("COMMAND", Kind.COMMAND, required=False),),
        access=Access.ANYONE,
        examples=("help", "help scale"),
    ),
)

BY_NAME: dict[str, CommandSpec] = {c.name: c for c in COMMANDS}

ALIASES: dict[str, str] = {
    "ls": "list",
    "?": "help",
    "info": "status",
    "pauseall": "pause-all",
    "resumeall": "resume-all",
}


def spec(name: str) -> CommandSpec:
    return BY_NAME[name]


def is_destructive(name: str, count: int | None) -> bool:
    """Commands that lose work: they need the asker's confirmation (issue 7, item 4)."""
    return name in ("delete", "release") or (name == "scale" and count == 0)
