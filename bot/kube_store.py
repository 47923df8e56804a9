"""The bot's durable state on Kubernetes: pending approvals and the global pause switch as ConfigMaps.

Why ConfigMaps: the bot pod has no persistent volume (its filesystem is read-only but for `/tmp`), a
restart or a rollout must lose no pending request, and the controller pod must read the same global
switch. Both live in the API server, reached only through `KubeApi` (the one module that calls
Kubernetes), with the RBAC the deployment grants (docs/deploy.md, "RBAC").

- `ConfigMapApprovalStore` (`bot.approvals.ApprovalStore`): one ConfigMap `rayops-approval-<id>` per
  request, in the namespace of the cluster it is about (so it is visible, and removable, with the
  team's other objects), labelled `app.kubernetes.io/managed-by: rayops` and `rayops.io/kind:
  approval`. State changes are compare-and-set on the request's state, guarded by the ConfigMap's
  `resourceVersion`: of two approvers pressing Approve at once (two bot replicas, or one pressing
  twice), the API server accepts one write and answers 409 to the other, which then re-reads and sees
  the request decided. Expiry is the bot's periodic sweep (`Bot.expire_requests`), as on a laptop.
- `ConfigMapPauseSwitch` (`bot.switch.PauseSwitch`): the `state` key of ConfigMap
  `rayops-global-pause` in rayops' own namespace, in the JSON the controller's reader parses
  (`controller.pause.ConfigMapPause`): `{"paused": bool, "by": str, "at": ISO 8601}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.approvals import KEEP_DECIDED, ApprovalRequest, ApprovalState
from bot.commands.parser import ID_ALPHABET, ID_LENGTH
from bot.switch import GlobalPause
from controller import keys
from controller.backends.base import AlreadyExists, ConflictError
from controller.backends.kube_api import JSON, KubeApi, NotFound
from controller.pause import PAUSE_CONFIGMAP, PAUSE_KEY

log = logging.getLogger("rayops.bot.kube")

APPROVAL_PREFIX = "rayops-approval-"
LABEL_KIND = "rayops.io/kind"
KIND_APPROVAL = "approval"
LABEL_APPROVAL_STATE = "rayops.io/approval-state"  # for `oc get cm -l rayops.io/approval-state=pending`
DATA_KEY = "request.json"
APPROVAL_SELECTOR = f"{keys.LABEL_MANAGED_BY}={keys.MANAGED_BY_VALUE},{LABEL_KIND}={KIND_APPROVAL}"
CAS_ATTEMPTS = 5  # lost races re-read and compare again; more than a few means something is wrong


def _well_formed(request_id: str) -> bool:
    return len(request_id) == ID_LENGTH and all(c in ID_ALPHABET for c in request_id)


def _meta(obj: JSON) -> dict[str, Any]:
    return dict(obj.get("metadata") or {})


class ConfigMapApprovalStore:
    """`ApprovalStore` over ConfigMaps; see the module docstring.

    `namespaces`: the managed namespaces, where requests live and are listed; None means every
    namespace (a developer's kubeconfig, listing across namespaces). A request is kept in the namespace
    of the cluster it is about, which is always a managed one: the bot refuses to create elsewhere
    (bot/commands/lifecycle.py), and it sees no cluster elsewhere to scale or extend. `get` remembers
    where an id was seen, so approving does not probe every namespace.
    """

    def __init__(self, api: KubeApi, namespaces: Sequence[str] | None) -> None:
        self.api = api
        self.namespaces = tuple(dict.fromkeys(namespaces)) if namespaces is not None else None
        self._where: dict[str, str] = {}

    # --- placement ------------------------------------------------------------------------------

    def _scopes(self) -> list[str | None]:
        return [None] if self.namespaces is None else list(self.namespaces)

    def namespace_for(self, request: ApprovalRequest) -> str:
        namespace, slash, _ = request.target.partition("/")
        if not (slash and namespace) and self.namespaces:
            return self.namespaces[0]
        if not (slash and namespace) or (self.namespaces is not None and namespace not in self.namespaces):
            raise ValueError(
                f"request {request.id} is about {request.target!r}, outside the managed namespaces"
            )
        return namespace

    @staticmethod
    def name_for(request_id: str) -> str:
        return APPROVAL_PREFIX + request_id

    def _body(self, request: ApprovalRequest, namespace: str, resource_version: str | None = None) -> JSON:
        meta: dict[str, Any] = {
            "name": self.name_for(request.id),
            "namespace": namespace,
            "labels": {
                keys.LABEL_MANAGED_BY: keys.MANAGED_BY_VALUE,
                LABEL_KIND: KIND_APPROVAL,
                LABEL_APPROVAL_STATE: str(request.state),
            },
        }
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        data = json.dumps(request.to_dict(), sort_keys=True, indent=1)
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {DATA_KEY: data}}

    @staticmethod
    def _decode(cm: JSON) -> ApprovalRequest | None:
        text = (cm.get("data") or {}).get(DATA_KEY)
        try:
            return ApprovalRequest.from_dict(json.loads(text)) if text else None
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring an unreadable approval ConfigMap %s: %s", _meta(cm).get("name"), e)
            return None

    # --- ApprovalStore --------------------------------------------------------------------------

    def add(self, request: ApprovalRequest) -> None:
        namespace = self.namespace_for(request)
        try:
            self.api.create_configmap(namespace, self._body(request, namespace))
        except AlreadyExists:
            raise ValueError(f"request id {request.id} exists") from None
        self._where[request.id] = namespace

    def _read(self, request_id: str) -> tuple[JSON, ApprovalRequest] | None:
        if not _well_formed(request_id):
            return None  # never build an object name from anything but a well-formed id
        name = self.name_for(request_id)
        known = self._where.get(request_id)
        if self.namespaces is None and known is None:
            everywhere = self.api.list_configmaps(None, APPROVAL_SELECTOR)
            found = [c for c in everywhere if _meta(c).get("name") == name]
            candidates = [(c, str(_meta(c).get("namespace"))) for c in found[:1]]
        else:
            scopes = [known] if known else [s for s in self._scopes() if s is not None]
            candidates = []
            for namespace in scopes:
                cm = self.api.get_configmap(namespace, name)
                if cm is not None:
                    candidates = [(cm, namespace)]
                    break
        for cm, namespace in candidates:
            request = self._decode(cm)
            if request is not None and request.id == request_id:
                self._where[request_id] = namespace
                return cm, request
        self._where.pop(request_id, None)
        return None

    def get(self, request_id: str) -> ApprovalRequest | None:
        found = self._read(request_id)
        return found[1] if found else None

    def list(self, state: ApprovalState | None = ApprovalState.PENDING) -> list[ApprovalRequest]:
        out: list[ApprovalRequest] = []
        for scope in self._scopes():
            for cm in self.api.list_configmaps(scope, APPROVAL_SELECTOR):
                request = self._decode(cm)
                if request is None:
                    continue
                self._where[request.id] = str(_meta(cm).get("namespace"))
                if state is None or request.state is state:
                    out.append(request)
        return sorted(out, key=lambda r: (r.created_at, r.id))  # namespaces listed in turn: a stable order

    def update(self, request: ApprovalRequest, expected: ApprovalState) -> bool:
        """Compare-and-set: write `request` only while the stored state is `expected`. A write that
        loses a race (409: the resourceVersion moved) re-reads and compares again."""
        for _ in range(CAS_ATTEMPTS):
            found = self._read(request.id)
            if found is None:
                return False
            cm, current = found
            if current.state is not expected:
                return False
            meta = _meta(cm)
            namespace = str(meta.get("namespace"))
            body = self._body(request, namespace, str(meta.get("resourceVersion")))
            try:
                self.api.replace_configmap(namespace, self.name_for(request.id), body)
                return True
            except ConflictError:
                log.info("approval %s changed while being decided; reading it again", request.id)
            except NotFound:
                return False
        return False

    def prune(self, now: datetime) -> int:
        """Delete requests decided more than KEEP_DECIDED ago (guarded: one changed meanwhile stays)."""
        n = 0
        for scope in self._scopes():
            for cm in self.api.list_configmaps(scope, APPROVAL_SELECTOR):
                request = self._decode(cm)
                if request is None or request.decided_at is None or now - request.decided_at <= KEEP_DECIDED:
                    continue
                meta = _meta(cm)
                try:
                    self.api.delete_configmap(
                        str(meta.get("namespace")), str(meta.get("name")), str(meta.get("resourceVersion"))
                    )
                    n += 1
                except (NotFound, ConflictError):
                    continue
                self._where.pop(request.id, None)
        return n


class ConfigMapPauseSwitch:
    """`PauseSwitch` over ConfigMap `rayops-global-pause` (key `state`) in rayops' own namespace,
    where the controller's `ConfigMapPause` reads it every tick.

    A missing ConfigMap or an unreadable value is "not paused", as the controller reads it (a corrupt
    switch must not freeze every cluster silently); an API failure is raised, so `pause-all` says it
    could not act instead of pretending."""

    def __init__(self, api: KubeApi, namespace: str, name: str = PAUSE_CONFIGMAP) -> None:
        self.api, self.namespace, self.name = api, namespace, name

    @staticmethod
    def _parse(cm: JSON | None) -> GlobalPause:
        text = ((cm or {}).get("data") or {}).get(PAUSE_KEY)
        try:
            d = json.loads(text) if text else {}
            at = datetime.fromisoformat(d["at"]) if d.get("at") else None
            by = d.get("by")
            return GlobalPause(d.get("paused") is True, by if isinstance(by, str) else None, at)
        except (ValueError, TypeError, AttributeError, KeyError):
            return GlobalPause(False)

    def get(self) -> GlobalPause:
        return self._parse(self.api.get_configmap(self.namespace, self.name))

    def set(self, paused: bool, by: str, at: datetime) -> None:
        """Create the ConfigMap or replace its value (last writer wins; a lost race is retried)."""
        state = json.dumps({"paused": paused, "by": by, "at": at.isoformat()})
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {keys.LABEL_MANAGED_BY: keys.MANAGED_BY_VALUE},
        }
        body: JSON = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {PAUSE_KEY: state}}
        for attempt in range(1, CAS_ATTEMPTS + 1):
            cm = self.api.get_configmap(self.namespace, self.name)
            try:
                if cm is None:
                    self.api.create_configmap(self.namespace, body)
                else:
                    version = _meta(cm).get("resourceVersion")
                    guarded = {**body, "metadata": {**meta, "resourceVersion": version}}
                    self.api.replace_configmap(self.namespace, self.name, guarded)
                return
            except (AlreadyExists, ConflictError, NotFound):
                if attempt == CAS_ATTEMPTS:
                    raise
