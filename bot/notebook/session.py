"""`RayopsSession`: the notebook's door to rayops, over the same bot pipeline chat uses.

A session is a `bot.core.Bot` (the backend, the policy set, the approval store, the audit log, the
global switch, the decision history) plus who the notebook's user is. Every change is a chat
command text run through `Bot.execute` as that user, so quotas, approvals, refusals, audit and
wording are exactly chat's, with no second implementation to drift; answers that are not OK become
exceptions carrying the same text (`bot.notebook.errors`).

Two ways to build one, both in their own modules so that importing `bot.notebook` loads neither
the Kubernetes client nor Ray:

- `RayopsSession.local(...)` (laptop mode, `bot.notebook.local`): the local backend and the state
  directory `rayops up` uses, as `console:<login>`; optionally runs the controller in this process.
- `RayopsSession.kubernetes(...)` (`bot.notebook.kube`): the KubeRay backend with the user's own
  credentials in the notebook's namespace, as `kubernetes:<user>`.

Tests and embedders may also build one directly from a `Bot` and an `Identity`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import authz
from bot.adapters.base import Reply, ReplyStatus
from bot.approvals import ApprovalState, ApprovalStore
from bot.authz import AccessView, Grant, Identity
from bot.commands.context import refused
from bot.commands.parser import ParseError, parse, quote
from bot.commands.table import spec
from bot.core import Bot
from bot.notebook.cluster import Answer, NotebookCluster, duration_text
from bot.notebook.errors import ApprovalPending, ClusterGone, RayopsError, Refused, raise_for
from controller.backends.base import ClusterNotFound, ClusterStatus
from controller.domain import ClusterRef

if TYPE_CHECKING:
    from bot.notebook.usage import DashboardUsage, Usage

VIA = "notebook"  # the audit record's `via` for every command a notebook runs


class RayopsSession:
    """See the module docstring. `namespace` is where `request` creates clusters and where names
    without a namespace are looked up; `usage` (optional) reads live CPU/GPU use for the indicator;
    `on_close` callables run at `close()` (a controller thread to stop, an API client to close);
    `driver_address` (laptop mode) gives the address a driver on this host uses instead of the
    connect info's Ray Client address; `controller` is the controller this session runs in the
    kernel (`controller.daemon.Controller`, laptop mode), None when another process scales."""

    def __init__(
        self,
        bot: Bot,
        identity: Identity,
        *,
        namespace: str,
        usage: DashboardUsage | None = None,
        poll_interval: float = 2.0,
        mode: str = "custom",
        on_close: Iterable[Callable[[], None]] = (),
        driver_address: Callable[[ClusterRef], str | None] | None = None,
        controller: Any = None,
    ) -> None:
        self.bot = bot
        self.driver_address = driver_address
        self.controller = controller
        self.identity = identity
        self.namespace = namespace
        self.usage = usage
        self.poll_interval = poll_interval
        self.mode = mode
        self._on_close = list(on_close)
        self.closed = False

    # --- constructors (heavy imports live in their modules) -----------------------------------

    @classmethod
    def local(
        cls,
        state_dir: str | Path | None = None,
        policies: str | Path | None = None,
        *,
        user: str | None = None,
        start_controller: bool | None = None,
        poll_interval: float = 2.0,
    ) -> RayopsSession:
        """Laptop mode; see `bot.notebook.local.local_session`."""
        from bot.notebook.local import local_session

        return local_session(
            state_dir, policies, user=user, start_controller=start_controller, poll_interval=poll_interval
        )

    @classmethod
    def kubernetes(
        cls,
        namespace: str | None = None,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        server: str | None = None,
        token: str | None = None,
        ca_cert: str | None = None,
        verify_tls: bool = True,
        user: str | None = None,
        policies: str | Path | None = None,
        policy_namespace: str = "rayops",
        poll_interval: float = 5.0,
        approvals: ApprovalStore | None = None,
    ) -> RayopsSession:
        """On Kubernetes with the user's own credentials; see `bot.notebook.kube.kube_session`."""
        from bot.notebook.kube import kube_session

        return kube_session(
            namespace,
            kubeconfig=kubeconfig,
            context=context,
            server=server,
            token=token,
            ca_cert=ca_cert,
            verify_tls=verify_tls,
            user=user,
            policies=policies,
            policy_namespace=policy_namespace,
            poll_interval=poll_interval,
            approvals=approvals,
        )

    # --- the pipeline -------------------------------------------------------------------------

    @property
    def grant(self) -> Grant:
        ps = self.bot.policies()
        access = AccessView.of(ps.access_policies.values()) if ps is not None else AccessView()
        return access.grant_for(self.identity)

    def run(self, text: str, *, confirmed: bool = False) -> Reply:
        """Run one chat command as this user; the OK reply, or the matching `RayopsError`."""
        if self.closed:
            raise RayopsError(Reply("this rayops session is closed; make a new one", ReplyStatus.ERROR))
        outcome = self.bot.execute(self.identity, text, confirmed=confirmed, via=VIA)
        reply = outcome.reply
        rid = self._pending_id(text) if reply.status is ReplyStatus.PENDING else None
        return raise_for(reply, rid)

    def _pending_id(self, text: str) -> str | None:
        """The approval request this user's `text` is waiting as (the store keeps canonical text)."""
        parsed = parse(text)
        if isinstance(parsed, ParseError):
            return None
        mine = [
            r
            for r in self.bot.approvals.list(ApprovalState.PENDING)
            if r.requester == self.identity.key and r.command == parsed.text
        ]
        return mine[-1].id if mine else None

    def read(self, ref: ClusterRef, *, raw: bool = False) -> ClusterStatus:
        """The cluster's status after chat's authorization check for `status`. `raw`: let the
        backend's ClusterNotFound through (the indicator's sign that the cluster was deleted)."""
        try:
            status = self.bot.backend.get(ref)
        except ClusterNotFound as e:
            if raw:
                raise
            raise ClusterGone(
                Reply(f"no cluster named {ref.name} in {ref.namespace} (deleted?)", ReplyStatus.ERROR)
            ) from e
        reason = authz.check(self.grant, spec("status"), status)
        if reason is not None:
            raise Refused(refused(reason).reply)
        return status

    def usage_of(self, status: ClusterStatus) -> Usage | None:
        if self.usage is None or status.connect is None:
            return None
        return self.usage.probe(status.connect.dashboard_url)

    # --- what a notebook calls ----------------------------------------------------------------

    def request(
        self,
        name: str,
        profile: str | None = None,
        *,
        workers: int | None = None,
        gpus: int | None = None,
        ttl: str | timedelta | None = None,
        namespace: str | None = None,
    ) -> NotebookCluster:
        """Request a cluster from a profile (chat's `create`); None values take the profile's and
        the access rule's defaults, as in chat. Over the user's limits this raises `ApprovalPending`
        with chat's message (approvers see the request with `pending`); not allowed: `Refused`."""
        ns = namespace or self.namespace
        words = ["create", quote(f"{ns}/{name}")]
        if profile is not None:
            words.append(f"profile={quote(profile)}")
        if workers is not None:
            words.append(f"workers={int(workers)}")
        if gpus is not None:
            words.append(f"gpus={int(gpus)}")
        if ttl is not None:
            words.append(f"ttl={quote(duration_text(ttl))}")
        self.run(" ".join(words))
        return NotebookCluster(self, ClusterRef(ns, name))

    def cluster(self, name: str, namespace: str | None = None) -> NotebookCluster:
        """A handle on an existing cluster this user may see (CodeFlare's `get_cluster`)."""
        ns = namespace or self.namespace
        self.read(ClusterRef(ns, name))
        return NotebookCluster(self, ClusterRef(ns, name))

    def clusters(self) -> list[ClusterStatus]:
        """Every cluster this user may see (CodeFlare's `list_all_clusters`)."""
        grant = self.grant
        return [c for c in self.bot.backend.list() if grant.may_see(c.ref.namespace)]

    def whoami(self) -> Answer:
        return Answer(self.run("whoami"))

    def pending(self) -> Answer:
        return Answer(self.run("pending"))

    def wait_for_approval(
        self, request_id: str, timeout: float = 3600.0, poll: float | None = None
    ) -> NotebookCluster | Answer:
        """Wait for an approver's decision on `request_id` (from `ApprovalPending.request_id`).

        Approved and carried out: the new cluster for a `create`, else the outcome. Denied: `Refused`
        with the reason. Expired, or approved but failed: `RayopsError`. `TimeoutError` if still
        waiting after `timeout` seconds.
        """
        poll = poll if poll is not None else self.poll_interval
        deadline = time.monotonic() + timeout
        while True:
            req = self.bot.approvals.get(request_id)
            if req is None:
                raise RayopsError(Reply(f"no request `{request_id}`", ReplyStatus.ERROR))
            if req.state is ApprovalState.DENIED:
                because = f": {req.outcome}" if req.outcome else ""
                raise Refused(
                    Reply(
                        f"Your request `{req.command}` ({req.id}) was denied by {req.decided_by}{because}.",
                        ReplyStatus.REFUSED,
                    )
                )
            expired = req.state is ApprovalState.EXPIRED or (
                req.state is ApprovalState.PENDING and req.expires_at <= datetime.now(UTC)
            )
            if expired:
                raise RayopsError(
                    Reply(f"Your request `{req.command}` ({req.id}) expired without a decision.")
                )
            if req.state is ApprovalState.APPROVED and req.outcome != "running":
                if not req.outcome.startswith("done"):
                    raise RayopsError(
                        Reply(
                            f"Your request `{req.command}` ({req.id}) was approved by {req.decided_by} "
                            f"but could not be carried out: {req.outcome}",
                            ReplyStatus.ERROR,
                        )
                    )
                parsed = parse(req.command)
                if not isinstance(parsed, ParseError) and parsed.name == "create":
                    ns = parsed.str_value("namespace") or self.namespace
                    return NotebookCluster(self, ClusterRef(ns, str(parsed.str_value("name"))))
                return Answer(Reply(req.outcome))
            if time.monotonic() >= deadline:
                raise TimeoutError(f"request {request_id} is still waiting for an approver")
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    # --- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop what this session started (an in-process controller); clusters are left running."""
        if self.closed:
            return
        self.closed = True
        for fn in reversed(self._on_close):
            fn()

    def __enter__(self) -> RayopsSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayopsSession({self.mode}, {self.identity.key}, namespace {self.namespace})"


__all__ = ["ApprovalPending", "RayopsSession"]
