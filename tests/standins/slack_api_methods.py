"""The Web API methods the Slack stand-in answers, as plain functions of in-memory state.

Kept apart from the server (`slack_api.py`) so the answers read as a table of Slack's behaviour: which
token type a method takes, which arguments it requires, the error code Slack gives when one is missing,
and the fields of a successful reply that callers read (`channel`, `ts`, `message`, `upload_url`,
`file_id`, `users`, ...). The caller holds the stand-in's lock around `answer()`.

Where Slack's exact error for a case is not documented (completing an upload whose bytes never arrived),
the code chosen here is named in the function's docstring.
"""

from __future__ import annotations

import json
import mimetypes
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.standins.slack_payloads import Workspace

BOT_TOKEN_PREFIXES = ("xoxb-", "xoxp-")
APP_TOKEN_PREFIX = "xapp-"
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})


class ApiError(Exception):
    """Becomes `{"ok": false, "error": code, **extra}` with HTTP 200, as Slack answers."""

    def __init__(self, code: str, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra


@dataclass
class UploadedFile:
    """A file announced by `files.getUploadURLExternal`; `content` is set when the bytes arrive."""

    file_id: str
    filename: str
    length: int
    alt_txt: str | None = None
    content: bytes | None = None
    title: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    completed: bool = False


@dataclass
class WebApiState:
    """Messages, files, usergroups, tokens and Socket Mode tickets, plus the answers built from them."""

    workspace: Workspace
    root_url: str
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    revoked_tokens: set[str] = field(default_factory=set)
    tickets: set[str] = field(default_factory=set)
    _sequence: int = 0

    def answer(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        """The fields of a successful reply (without `ok`), or raise ApiError."""
        handler = _METHODS.get(method)
        if handler is None:
            raise ApiError("unknown_method", req_method=method)
        _check_token(method, token, self.revoked_tokens)
        return handler(self, params)

    def _next_ts(self) -> str:
        self._sequence += 1
        return f"{int(time.time())}.{self._sequence:06d}"

    # -------------------------------------------------------------- methods

    def auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        ws = self.workspace
        reply: dict[str, Any] = {
            "url": ws.url,
            "team": ws.team_name,
            "user": ws.bot_name,
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": False,
        }
        if ws.enterprise_id is not None:
            reply["enterprise_id"] = ws.enterprise_id
        return reply

    def chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = _required(params, "channel", "channel_not_found")
        if not any(params.get(k) for k in ("text", "blocks", "attachments", "markdown_text")):
            raise ApiError("no_text")
        ts = self._next_ts()
        message = {
            "type": "message",
            "subtype": "bot_message",
            "text": params.get("text") or params.get("markdown_text") or "",
            "user": self.workspace.bot_user_id,
            "bot_id": self.workspace.bot_id,
            "app_id": self.workspace.app_id,
            "team": self.workspace.team_id,
            "ts": ts,
        }
        for key in ("blocks", "attachments", "thread_ts", "metadata"):
            if params.get(key):
                message[key] = _json_value(params[key])
        self.messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": message}

    def chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = _required(params, "channel", "channel_not_found")
        ts = _required(params, "ts", "message_not_found")
        message = self.messages.get((channel, ts))
        if message is None:
            raise ApiError("message_not_found")
        if "text" in params:
            message["text"] = params["text"]
        for key in ("blocks", "attachments"):
            if key in params:
                message[key] = _json_value(params[key])
        message["edited"] = {"user": self.workspace.bot_user_id, "ts": self._next_ts()}
        return {"channel": channel, "ts": ts, "text": message["text"], "message": message}

    def chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        _required(params, "channel", "channel_not_found")
        _required(params, "user", "user_not_in_channel")
        if not any(params.get(k) for k in ("text", "blocks", "attachments", "markdown_text")):
            raise ApiError("no_text")
        return {"message_ts": self._next_ts()}

    def files_get_upload_url_external(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = _required(params, "filename", "invalid_arguments")
        try:
            length = int(params.get("length", ""))
        except ValueError:
            raise ApiError("invalid_arguments") from None
        self._sequence += 1
        file_id = f"F0RAY{self._sequence:06d}"
        self.files[file_id] = UploadedFile(file_id, filename, length, params.get("alt_txt"))
        return {"upload_url": f"{self.root_url}/upload/v1/{file_id}", "file_id": file_id}

    def files_complete_upload_external(self, params: dict[str, Any]) -> dict[str, Any]:
        """Unknown ids, and files whose bytes never reached the upload URL, get `file_not_found`."""
        entries = _json_value(params.get("files", "[]"))
        if not isinstance(entries, list) or not entries:
            raise ApiError("invalid_arguments")
        channel_id = params.get("channel_id") or (params.get("channels") or "").split(",")[0] or None
        if params.get("thread_ts") and not channel_id:
            raise ApiError("invalid_arguments")
        done: list[dict[str, Any]] = []
        for entry in entries:
            uploaded = self.files.get(str(entry.get("id")))
            if uploaded is None or uploaded.content is None:
                raise ApiError("file_not_found")
            uploaded.title = entry.get("title") or uploaded.filename
            uploaded.channel_id = channel_id
            uploaded.thread_ts = params.get("thread_ts")
            uploaded.initial_comment = params.get("initial_comment")
            uploaded.completed = True
            mimetype = mimetypes.guess_type(uploaded.filename)[0] or "application/octet-stream"
            done.append(
                {
                    "id": uploaded.file_id,
                    "created": int(time.time()),
                    "name": uploaded.filename,
                    "title": uploaded.title,
                    "mimetype": mimetype,
                    "filetype": uploaded.filename.rsplit(".", 1)[-1].lower(),
                    "user": self.workspace.bot_user_id,
                    "size": len(uploaded.content),
                    "channels": [channel_id] if channel_id else [],
                }
            )
        return {"files": done}

    def usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = _required(params, "usergroup", "no_such_subteam")
        if group not in self.usergroups:
            raise ApiError("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self.tickets.add(ticket)
        link = self.root_url.replace("http://", "ws://", 1)
        return {"url": f"{link}/link/?ticket={ticket}&app_id={self.workspace.app_id}"}


_METHODS: dict[str, Callable[[WebApiState, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": WebApiState.auth_test,
    "chat.postMessage": WebApiState.chat_post_message,
    "chat.update": WebApiState.chat_update,
    "chat.postEphemeral": WebApiState.chat_post_ephemeral,
    "files.getUploadURLExternal": WebApiState.files_get_upload_url_external,
    "files.completeUploadExternal": WebApiState.files_complete_upload_external,
    "usergroups.users.list": WebApiState.usergroups_users_list,
    "apps.connections.open": WebApiState.apps_connections_open,
}


def _check_token(method: str, token: str | None, revoked: set[str]) -> None:
    """Slack's order: no token, revoked token, unknown token, then a token of the wrong type."""
    if not token:
        raise ApiError("not_authed")
    if token in revoked:
        raise ApiError("token_revoked")
    is_app_token = token.startswith(APP_TOKEN_PREFIX)
    if not is_app_token and not token.startswith(BOT_TOKEN_PREFIXES):
        raise ApiError("invalid_auth")
    if is_app_token != (method in APP_TOKEN_METHODS):
        raise ApiError("not_allowed_token_type")


def _required(params: dict[str, Any], name: str, error: str) -> str:
    value = params.get(name)
    if not value:
        raise ApiError(error)
    return str(value)


def _json_value(value: Any) -> Any:
    """Form-encoded clients send blocks/attachments/files as JSON strings; JSON clients send structures."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
