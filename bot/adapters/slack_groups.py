"""Slack user groups for access rules (`slackGroup: S0OPSTEAM`): the bot core's `GroupResolver`.

Slack answers "who is in group S" (`usergroups.users.list`, scope `usergroups:read`), not "which
groups is U in", so the resolver asks about the groups the access policies name, and caches each
group's members for `ttl_s` (membership changes rarely; a command must not cost a Web API call per
group). A failed lookup keeps the last known members if there are any (logged), else counts the
group as empty: a person may then be refused, never granted more than the policy says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.adapters.base import Platform
from controller.policy.loader import PolicySet

log = logging.getLogger("rayops.bot.slack.groups")


def slack_groups_named(policy_set: PolicySet | None) -> frozenset[str]:
    """Every `slackGroup` subject of the access policies (approvers and rules)."""
    if policy_set is None:
        return frozenset()
    out: set[str] = set()
    for p in policy_set.access_policies.values():
        for s in [*p.spec.approvers, *(s for r in p.spec.rules for s in r.subjects)]:
            if s.slack_group is not None and s.slack_group != "*":
                out.add(s.slack_group)
    return frozenset(out)


@dataclass
class _Members:
    users: frozenset[str]
    fetched_at: float


class SlackGroupResolver:
    def __init__(
        self,
        client: WebClient,
        wanted: Callable[[], Iterable[str]],
        *,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.wanted = wanted
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[str, _Members] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.lookups = 0  # Web API calls made (tests check the cache)

    async def groups_of(self, platform: Platform, user_id: str) -> frozenset[str]:
        if platform is not Platform.SLACK:
            return frozenset()
        found = set()
        for group in sorted(set(self.wanted())):
            if user_id in await self._members(group):
                found.add(group)
        return frozenset(found)

    async def _members(self, group: str) -> frozenset[str]:
        cached = self._cache.get(group)
        if cached is not None and self.clock() - cached.fetched_at < self.ttl_s:
            return cached.users
        lock = self._locks.setdefault(group, asyncio.Lock())
        async with lock:  # one lookup per group at a time; the others use its result
            cached = self._cache.get(group)
            if cached is not None and self.clock() - cached.fetched_at < self.ttl_s:
                return cached.users
            try:
                self.lookups += 1
                resp = await asyncio.to_thread(self.client.usergroups_users_list, usergroup=group)
                users = frozenset(str(u) for u in resp.get("users") or [])
            except (SlackApiError, OSError, TimeoutError) as e:
                why = e.response.get("error") if isinstance(e, SlackApiError) else type(e).__name__
                if cached is not None:
                    log.warning(
                        "Slack user group %s: lookup failed (%s); using members from before", group, why
                    )
                    return cached.users
                log.warning("Slack user group %s: lookup failed (%s); counting it as empty", group, why)
                return frozenset()
            self._cache[group] = _Members(users, self.clock())
            return users
