"""The stand-in's object store: resourceVersions, generations, optimistic concurrency, patches and watch
history.

Stored objects are immutable once committed and carry their JSON encoding, so a list of thousands of objects
is a byte join (no deep copy, no re-encoding); every write builds a new dict. One lock guards the whole store:
the stand-in serves a test, not a cluster, and a single lock makes the resourceVersion order and the watch
history trivially consistent.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.standins.crd import FieldCause
from tests.standins.kube_codec import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    Stored,
    apply_json_patch,
    encode,
    merge_patch,
    now_rfc3339,
    random_suffix,
)
from tests.standins.kube_resources import ApiError, ResourceRegistry, ResourceType, validate_metadata
from tests.standins.kube_selectors import (
    FieldRequirement,
    Requirement,
    field_value,
    fields_match,
    labels_match,
)
from tests.standins.kube_watch import History, WatchEvent, watch_events

# Metadata only the server writes; a client's values for these are ignored on update.
_SYSTEM_META = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
)


@dataclass(frozen=True)
class ListResult:
    rv: int
    items: list[Stored]
    continue_token: str
    remaining: int | None


class Store:
    """All objects of all resource types, with the write rules of a real API server."""

    def __init__(
        self,
        registry: ResourceRegistry,
        *,
        history_limit: int = 50_000,
        indexed_labels: frozenset[str] = frozenset({"ray.io/cluster"}),
    ) -> None:
        self.registry = registry
        # `key=value` selectors on these labels are answered from an index instead of a scan, so that listing
        # one cluster's pods stays cheap with thousands of clusters (the operator and rayops both do it).
        self.indexed_labels = indexed_labels
        self._label_index: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.history_limit = history_limit
        self.closed = False
        self._rv = 1000
        self._objects: dict[str, dict[tuple[str, str], Stored]] = {}
        self._history: dict[str, History] = {}

    # ----- reads -----

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, rt: ResourceType, namespace: str, name: str) -> Stored:
        found = self._objects.get(rt.key, {}).get((self._ns(rt, namespace), name))
        if found is None:
            raise rt.not_found(name)
        return found

    def find(self, rt: ResourceType, namespace: str, name: str) -> Stored | None:
        return self._objects.get(rt.key, {}).get((self._ns(rt, namespace), name))

    def list_objects(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: tuple[Requirement, ...] = (),
        fields: tuple[FieldRequirement, ...] = (),
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        indexed = next((r for r in labels if r.op == "=" and r.key in self.indexed_labels), None)
        with self.lock:
            rv = self._rv
            bucket = self._objects.get(rt.key, {})
            if indexed is not None:
                keys = self._label_index.get((rt.key, indexed.key, indexed.values[0]), set())
                entries = [(k, bucket[k]) for k in keys]
            else:
                entries = list(bucket.items())
        start: tuple[str, str] | None = None
        if continue_token:
            try:
                state = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start, rv = (state["ns"], state["name"]), int(state["rv"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ApiError(400, f"continue key is not valid: {exc}") from exc
        extract = self.field_extractor(rt)
        selected = [
            (key, s)
            for key, s in entries
            if (namespace is None or key[0] == namespace)
            and (start is None or key > start)
            and labels_match(labels, s.obj)
            and fields_match(fields, s.obj, extract)
        ]
        selected.sort(key=lambda kv: kv[0])
        items = [s for _, s in selected]
        token, remaining = "", None
        if limit and len(items) > limit:
            last = items[limit - 1]
            # A server can count what is left only when no selector filters the rest.
            remaining = None if labels or fields else len(items) - limit
            state = {"rv": rv, "ns": last.namespace, "name": last.name}
            token = base64.urlsafe_b64encode(encode(state)).decode()
            items = items[:limit]
        return ListResult(rv, items, token, remaining)

    # ----- writes -----

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        obj: dict[str, Any],
        *,
        dry_run: bool = False,
        keep_status: bool = False,
    ) -> Stored:
        """POST semantics; `keep_status` is for in-process writers (the fake operator, test set-up)."""
        meta = self._prepare_envelope(rt, namespace, obj)
        if meta.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        if not meta.get("name") and not meta.get("generateName"):
            raise rt.invalid(
                "",
                [
                    FieldCause(
                        "FieldValueRequired",
                        "Required value: name or generateName is required",
                        "metadata.name",
                    )
                ],
            )
        status = obj.get("status")
        if "status" in rt.subresources:
            obj.pop("status", None)
        if rt.on_create is not None:
            rt.on_create(obj)
        if keep_status and status is not None:
            obj["status"] = status
        for key in _SYSTEM_META:
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rt.has_generation:
            meta["generation"] = 1
        with self.lock:
            if not meta.get("name"):
                meta["name"] = self._generate_name(rt, namespace, str(meta["generateName"]))
            self._admit(rt, obj, None)
            slot = (self._ns(rt, namespace), str(meta["name"]))
            if slot in self._objects.get(rt.key, {}):
                raise rt.already_exists(slot[1])
            if dry_run:
                return Stored(obj, encode(obj), self._rv)
            return self._commit(rt, slot, obj, None)

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str = "",
        dry_run: bool = False,
        from_patch: bool = False,
        force: bool = False,
    ) -> Stored:
        """PUT semantics. `force` skips the resourceVersion precondition (in-process writers only)."""
        with self.lock:
            old = self.get(rt, namespace, name)
            new = self._merge_for_update(rt, old, body, subresource, from_patch=from_patch, force=force)
            return self._finish_update(rt, old, new, dry_run=dry_run, subresource=subresource)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Stored:
        with self.lock:
            old = self.get(rt, namespace, name)
            doc = old.copy()
            if content_type == JSON_PATCH:
                new = apply_json_patch(doc, patch)
            elif content_type in (MERGE_PATCH, APPLY_PATCH) or (
                content_type == STRATEGIC_PATCH and not rt.is_custom
            ):
                if not isinstance(patch, dict):
                    raise ApiError(400, "the body of the request must be a JSON object for a merge patch")
                new = merge_patch(doc, patch)
            else:
                raise ApiError(
                    415,
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}"
                    + ("" if rt.is_custom else f", {STRATEGIC_PATCH}"),
                )
            merged = self._merge_for_update(rt, old, new, subresource, from_patch=True, force=False)
            return self._finish_update(rt, old, merged, dry_run=dry_run, subresource=subresource)

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        dry_run: bool = False,
    ) -> tuple[Stored, bool]:
        """Returns (object, deleted now). An object with finalizers only gets a deletionTimestamp."""
        with self.lock:
            old = self.get(rt, namespace, name)
            meta = old.obj["metadata"]
            if uid and uid != meta.get("uid"):
                raise ApiError(
                    409,
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: {meta.get('uid')}",
                    "Conflict",
                    details=rt.details(name),
                )
            if resource_version and resource_version != str(old.rv):
                raise ApiError(
                    409,
                    f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                    f"ResourceVersion in object meta: {old.rv}",
                    "Conflict",
                    details=rt.details(name),
                )
            if dry_run:
                return old, not meta.get("finalizers")
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return old, False
                doc = old.copy()
                doc["metadata"]["deletionTimestamp"] = now_rfc3339()
                doc["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._commit(rt, self._key(rt, old), doc, old), False
            gone = self._commit(rt, self._key(rt, old), None, old)
            if rt.group == "" and rt.plural == "namespaces":
                self._purge_namespace(name)
            return gone, True

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: tuple[Requirement, ...] = (),
        fields: tuple[FieldRequirement, ...] = (),
    ) -> list[Stored]:
        with self.lock:
            victims = self.list_objects(rt, namespace, labels, fields).items
            return [self.delete(rt, s.namespace, s.name)[0] for s in victims]

    # ----- in-process helpers (test set-up, the fake operator) -----

    def put(self, obj: dict[str, Any], *, admit: bool = True) -> Stored:
        """Create or overwrite, status included, without preconditions; still defaulted and validated."""
        rt = self.registry.for_object(obj)
        meta = obj.setdefault("metadata", {})
        namespace = str(meta.get("namespace", "default")) if rt.namespaced else ""
        with self.lock:
            old = self.find(rt, namespace, str(meta.get("name", "")))
            if old is None:
                return self.create(rt, namespace, obj, keep_status=True)
            status = obj.get("status")
            new = self._merge_for_update(rt, old, obj, "", from_patch=False, force=True)
            if status is not None:
                new["status"] = status
            return self._finish_update(rt, old, new, dry_run=False, admit=admit)

    def write_status(self, rt: ResourceType, namespace: str, name: str, status: dict[str, Any]) -> Stored:
        """Replace `.status` as a controller does through `/status`: no generation bump, no precondition."""
        with self.lock:
            old = self.get(rt, namespace, name)
            doc = old.copy()
            doc["status"] = status
            return self._finish_update(rt, old, doc, dry_run=False, subresource="status")

    def compact(self) -> int:
        """Forget all watch history, so any watch from an older resourceVersion gets 410 Expired."""
        with self.lock:
            for hist in self._history.values():
                hist.rvs.clear()
                hist.events.clear()
                hist.compacted_rv = self._rv
            return self._rv

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.changed.notify_all()

    # ----- watch -----

    def history(self, rt: ResourceType) -> History:
        return self._history.setdefault(rt.key, History())

    def snapshot(self, rt: ResourceType) -> list[Stored]:
        return list(self._objects.get(rt.key, {}).values())

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: tuple[Requirement, ...],
        fields: tuple[FieldRequirement, ...],
        since: int | None,
        timeout: float,
        alive: Callable[[], bool],
    ) -> Iterator[tuple[str, bytes]]:
        """(event type, object JSON) pairs; see `kube_watch.watch_events`."""
        return watch_events(self, rt, namespace, labels, fields, since, timeout, alive)

    # ----- internals -----

    @staticmethod
    def _ns(rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "") if rt.namespaced else ""

    def _key(self, rt: ResourceType, stored: Stored) -> tuple[str, str]:
        return (self._ns(rt, stored.namespace), stored.name)

    def field_extractor(self, rt: ResourceType) -> Callable[[Any, str], str]:
        paths = rt.field_paths

        def extract(obj: Any, selector_field: str) -> str:
            return field_value(obj, paths.get(selector_field, selector_field))

        return extract

    def _generate_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        existing = self._objects.get(rt.key, {})
        while True:
            name = prefix + random_suffix()
            if (self._ns(rt, namespace), name) not in existing:
                return name

    def _prepare_envelope(self, rt: ResourceType, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        for key, want in (("apiVersion", rt.api_version), ("kind", rt.kind)):
            have = obj.get(key)
            if have and have != want:
                raise ApiError(
                    400,
                    f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                    f"expected API version ({rt.api_version})"
                    if key == "apiVersion"
                    else f"the kind in the data ({have}) does not match the expected kind ({want})",
                )
            obj[key] = want
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return meta

    def _merge_for_update(
        self,
        rt: ResourceType,
        old: Stored,
        body: Any,
        subresource: str,
        *,
        from_patch: bool,
        force: bool,
    ) -> dict[str, Any]:
        meta = self._prepare_envelope(rt, old.namespace, body)
        if meta.get("name") and meta["name"] != old.name:
            raise ApiError(
                400,
                f"the name of the object ({meta['name']}) does not match the name on the URL ({old.name})",
            )
        old_meta = old.obj["metadata"]
        rv = meta.get("resourceVersion")
        if not force:
            if rv:
                if str(rv) != str(old.rv):
                    raise rt.conflict(old.name)
            elif not from_patch and not rt.allow_unconditional_update:
                raise rt.invalid(
                    old.name,
                    [
                        FieldCause(
                            "FieldValueInvalid",
                            "Invalid value: 0x0: must be specified for an update",
                            "metadata.resourceVersion",
                        )
                    ],
                )
            if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
                raise ApiError(
                    409,
                    f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                    f"{old_meta.get('uid')}",
                    "Conflict",
                    details=rt.details(old.name),
                )
        if subresource == "status":
            new = old.copy()
            if "status" in body:
                new["status"] = body["status"]
            else:
                new.pop("status", None)
            return new
        if subresource:
            raise ApiError(404, "the server could not find the requested resource")
        meta["name"] = old.name
        for key in _SYSTEM_META:
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if "status" in rt.subresources:
            if "status" in old.obj:
                body["status"] = old.obj["status"]
            else:
                body.pop("status", None)
        return body

    def _finish_update(
        self,
        rt: ResourceType,
        old: Stored,
        new: dict[str, Any],
        *,
        dry_run: bool,
        admit: bool = True,
        subresource: str = "",
    ) -> Stored:
        if admit:
            self._admit(rt, new, old.obj, subresource)
        meta = new["metadata"]
        meta.pop("resourceVersion", None)
        if rt.has_generation and _content(new) != _content(old.obj):
            meta["generation"] = int(old.obj["metadata"].get("generation", 1)) + 1
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            if dry_run:
                return old
            return self._commit(rt, self._key(rt, old), None, old)
        unchanged = {
            **old.obj,
            "metadata": {k: v for k, v in old.obj["metadata"].items() if k != "resourceVersion"},
        }
        if new == unchanged or dry_run:
            # A no-op write is not a write: same resourceVersion, no watch event (as a real server does).
            return old if new == unchanged else Stored(new, encode(new), old.rv)
        return self._commit(rt, self._key(rt, old), new, old)

    def _admit(
        self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, subresource: str = ""
    ) -> None:
        causes = validate_metadata(obj["metadata"])
        if rt.admit is not None:
            causes += rt.admit(obj, old, subresource)
        if causes:
            raise rt.invalid(str(obj["metadata"].get("name", "")), causes)

    def _commit(
        self, rt: ResourceType, key: tuple[str, str], obj: dict[str, Any] | None, old: Stored | None
    ) -> Stored:
        """Write (or delete, when `obj` is None) under a fresh resourceVersion and record the watch event."""
        self._rv += 1
        bucket = self._objects.setdefault(rt.key, {})
        if obj is None:
            assert old is not None
            last = old.copy()
            last["metadata"]["resourceVersion"] = str(self._rv)
            stored = Stored(last, encode(last), self._rv)
            del bucket[key]
            event = WatchEvent(self._rv, "DELETED", stored, None)
        else:
            meta = obj["metadata"]
            meta["resourceVersion"] = str(self._rv)
            ordered = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta}
            ordered.update((k, v) for k, v in obj.items() if k not in ordered)
            stored = Stored(ordered, encode(ordered), self._rv)
            bucket[key] = stored
            event = WatchEvent(
                self._rv, "ADDED" if old is None else "MODIFIED", stored, old.obj if old else None
            )
        self._reindex(rt, key, old.obj if old else None, obj)
        hist = self._history.setdefault(rt.key, History())
        hist.rvs.append(event.rv)
        hist.events.append(event)
        if len(hist.events) > 2 * self.history_limit:
            cut = len(hist.events) - self.history_limit
            hist.compacted_rv = hist.rvs[cut - 1]
            del hist.rvs[:cut], hist.events[:cut]
        self.changed.notify_all()
        return stored

    def _reindex(
        self, rt: ResourceType, key: tuple[str, str], old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        old_labels = ((old or {}).get("metadata") or {}).get("labels") or {}
        new_labels = ((new or {}).get("metadata") or {}).get("labels") or {}
        for label in self.indexed_labels:
            before, after = old_labels.get(label), new_labels.get(label)
            if before == after:
                continue
            if before is not None:
                self._label_index.get((rt.key, label, before), set()).discard(key)
            if after is not None:
                self._label_index.setdefault((rt.key, label, after), set()).add(key)

    def _purge_namespace(self, namespace: str) -> None:
        for rt in self.registry.all():
            if rt.namespaced:
                for stored in [s for (ns, _), s in self._objects.get(rt.key, {}).items() if ns == namespace]:
                    self._commit(rt, self._key(rt, stored), None, stored)


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """What a generation counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
