"""Settings of the Slack adapter, from the environment (docs/deploy.md section 3).

| variable | default | meaning |
|---|---|---|
| `SLACK_BOT_TOKEN` (or `SLACK_BOT_TOKEN_FILE`) | required | the bot token, `xoxb-...` |
| `SLACK_APP_TOKEN` (or `_FILE`) | required in socket mode | app-level token `xapp-...` (connections:write) |
| `SLACK_SIGNING_SECRET` (or `_FILE`) | required in http mode | verifies Slack's request signatures |
| `RAYOPS_SLACK_MODE` | `socket` | `socket` (no inbound route needed) or `http` |
| `RAYOPS_SLACK_HOST` | 127.0.0.1; 0.0.0.0 in a pod | http mode: where to listen |
| `RAYOPS_SLACK_PORT` | `3000` | http mode: the port; Slack's Request URL is `https://<host>/slack/events` |
| `RAYOPS_SLACK_API_URL` | `https://slack.com/api/` | the Web API base (a stand-in in tests) |
| `RAYOPS_SLACK_MIN_INTERVAL` | `1` | seconds between two posts to one channel (Slack's 1/s) |
| `RAYOPS_SLACK_GROUP_TTL` | `300` | seconds a user group's membership is cached |

Secrets are `repr=False` fields: printing the settings shows no token.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bot.adapters.runtime import SettingsError, default_host, env_float, env_int, read_secret

SlackMode = Literal["socket", "http"]
DEFAULT_API_URL = "https://slack.com/api/"
EVENTS_PATH = "/slack/events"


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str = field(repr=False)
    app_token: str | None = field(default=None, repr=False)
    """Socket Mode only."""
    signing_secret: str | None = field(default=None, repr=False)
    """HTTP mode only."""
    mode: SlackMode = "socket"
    host: str = "127.0.0.1"
    port: int = 3000
    path: str = EVENTS_PATH
    api_url: str = DEFAULT_API_URL
    """Keep the trailing slash: slack_sdk joins method names with urljoin."""
    command: str = "/ray"
    min_interval_s: float = 1.0
    max_attempts: int = 6
    group_ttl_s: float = 300.0
    request_timeout_s: int = 10
    replay_cache_size: int = 100_000
    """Signatures remembered for replay protection (5 minutes' worth); beyond it, refuse (503)."""

    def __post_init__(self) -> None:
        if not self.bot_token:
            raise SettingsError("SLACK_BOT_TOKEN (or SLACK_BOT_TOKEN_FILE) is required")
        if self.mode not in ("socket", "http"):
            raise SettingsError(f"RAYOPS_SLACK_MODE must be socket or http, not {self.mode!r}")
        if self.mode == "socket" and not self.app_token:
            raise SettingsError("socket mode needs SLACK_APP_TOKEN (xapp-..., scope connections:write)")
        if self.mode == "http" and not self.signing_secret:
            raise SettingsError("http mode needs SLACK_SIGNING_SECRET")
        if not self.api_url.endswith("/"):
            object.__setattr__(self, "api_url", self.api_url + "/")

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> SlackSettings:
        env = os.environ if env is None else env
        mode = (env.get("RAYOPS_SLACK_MODE") or "socket").strip().lower()
        return SlackSettings(
            bot_token=read_secret(env, "SLACK_BOT_TOKEN") or "",
            app_token=read_secret(env, "SLACK_APP_TOKEN"),
            signing_secret=read_secret(env, "SLACK_SIGNING_SECRET"),
            mode=mode,  # type: ignore[arg-type]  # checked in __post_init__
            host=env.get("RAYOPS_SLACK_HOST") or default_host(env),
            port=env_int(env, "RAYOPS_SLACK_PORT", 3000),
            api_url=env.get("RAYOPS_SLACK_API_URL") or DEFAULT_API_URL,
            min_interval_s=env_float(env, "RAYOPS_SLACK_MIN_INTERVAL", 1.0),
            group_ttl_s=env_float(env, "RAYOPS_SLACK_GROUP_TTL", 300.0),
        )
