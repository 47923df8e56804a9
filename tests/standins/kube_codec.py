"""Encoding, timestamps, generated names and the two JSON patch algorithms, shared by the stand-in."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jsonpatch
import jsonpointer

from tests.standins.kube_resources import ApiError

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of the server's generateName suffix


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_NAME_CHARS) for _ in range(n))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, `null` deletes, anything else (lists included) replaces whole."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(frozen=True)
class Stored:
    """A committed object. `obj` must never be mutated; copy it with `copy()` to change it."""

    obj: dict[str, Any]
    raw: bytes
    rv: int

    def copy(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.raw)
        return result

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


def apply_json_patch(doc: dict[str, Any], patch: Any) -> dict[str, Any]:
    if not isinstance(patch, list):
        raise ApiError(400, "the body of a JSON patch must be a list of operations")
    try:
        ops = jsonpatch.JsonPatch(patch)
        result: dict[str, Any] = ops.apply(doc, in_place=True)
    except jsonpatch.InvalidJsonPatch as exc:
        raise ApiError(400, f"invalid JSON patch: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        # A failed `test` (and an op on a missing path) is 422 on a real server, with a bare message.
        raise ApiError(
            422,
            "the server rejected our request due to an error in our request",
            "Invalid",
            details={"causes": [{"reason": "FieldValueInvalid", "message": str(exc), "field": "patch"}]},
        ) from exc
    if not isinstance(result, dict):
        raise ApiError(422, "a JSON patch must leave an object", "Invalid")
    return result
