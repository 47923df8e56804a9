"""Settings of the Matrix adapter, from the environment (docs/deploy.md section 3).

| variable | default | meaning |
|---|---|---|
| `MATRIX_HOMESERVER` | required | client-server API base URL, `https://matrix.example.org` |
| `MATRIX_USER_ID` | required | the bot account, `@rayops:example.org` |
| `MATRIX_ACCESS_TOKEN` (or `_FILE`) | one of the two | an access token of that account (preferred) |
| `MATRIX_PASSWORD` (or `_FILE`) | | log in at start instead (new device unless `MATRIX_DEVICE_ID`) |
| `MATRIX_DEVICE_ID` | from the token | keep one device across restarts |
| `MATRIX_INVITE_ALLOW` | `@*:<bot's server>` | comma-separated globs of inviters whose invites are accepted |
| `MATRIX_E2EE` | `false` | end-to-end encryption (needs `matrix-nio[e2e]` and `MATRIX_STORE_PATH`) |
| `MATRIX_STORE_PATH` | none | nio's store (encryption keys, sync token); required with E2EE |
| `RAYOPS_MATRIX_SYNC_TIMEOUT` | `30` | seconds one sync long-poll may wait on the server |

Secrets are `repr=False` fields: printing the settings shows no token or password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.adapters.runtime import SettingsError, env_float, read_secret


@dataclass(frozen=True)
class MatrixSettings:
    homeserver: str
    user_id: str
    access_token: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    device_id: str | None = None
    device_name: str = "rayops bot"
    invite_allow: tuple[str, ...] = ()
    """Globs of inviters whose invites are accepted; empty means users of the bot's own server."""
    encryption: bool = False
    store_path: str | None = None
    sync_timeout_s: float = 30.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    request_timeout_s: float = 60.0
    max_limit_exceeded: int = 5
    """How many M_LIMIT_EXCEEDED answers in a row one request waits out (nio sleeps `retry_after_ms`)."""

    def __post_init__(self) -> None:
        if not self.homeserver:
            raise SettingsError("MATRIX_HOMESERVER is required")
        if not self.user_id.startswith("@") or ":" not in self.user_id:
            raise SettingsError(f"MATRIX_USER_ID must be a full user id (@name:server), not {self.user_id!r}")
        if not self.access_token and not self.password:
            raise SettingsError("MATRIX_ACCESS_TOKEN (or MATRIX_PASSWORD) is required")
        if self.encryption and not self.store_path:
            raise SettingsError("MATRIX_E2EE needs MATRIX_STORE_PATH (a persistent directory for the keys)")

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]

    @property
    def allowed_inviters(self) -> tuple[str, ...]:
        return self.invite_allow or (f"@*:{self.server_name}",)

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> MatrixSettings:
        env = os.environ if env is None else env
        allow = tuple(p.strip() for p in (env.get("MATRIX_INVITE_ALLOW") or "").split(",") if p.strip())
        e2ee = (env.get("MATRIX_E2EE") or "false").strip().lower()
        if e2ee not in ("true", "false", "1", "0", "yes", "no"):
            raise SettingsError(f"MATRIX_E2EE must be true or false, not {e2ee!r}")
        return MatrixSettings(
            homeserver=(env.get("MATRIX_HOMESERVER") or "").rstrip("/"),
            user_id=env.get("MATRIX_USER_ID") or "",
            access_token=read_secret(env, "MATRIX_ACCESS_TOKEN"),
            password=read_secret(env, "MATRIX_PASSWORD"),
            device_id=env.get("MATRIX_DEVICE_ID") or None,
            invite_allow=allow,
            encryption=e2ee in ("true", "1", "yes"),
            store_path=env.get("MATRIX_STORE_PATH") or None,
            sync_timeout_s=env_float(env, "RAYOPS_MATRIX_SYNC_TIMEOUT", 30.0),
        )
