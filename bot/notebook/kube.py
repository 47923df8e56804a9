"""`RayopsSession.kubernetes(...)`: the notebook on Kubernetes/OpenShift, with the user's own credentials.

Why the user's credentials and not a service account of rayops: the RayCluster is created, read and
deleted by the person, so Kubernetes RBAC in their namespace stays the hard boundary (a notebook can
never do more than its user could with `oc`), and the API server's audit log names them. The bot's
access rules then apply on top, exactly as in chat (quotas, approvals, who may change what): the
session runs chat's command pipeline in the notebook's kernel, as `kubernetes:<user>`.

Credentials, in order: `server` + `token` (CodeFlare's `TokenAuthentication`: paste `oc whoami -t`);
a kubeconfig (`kubeconfig`/`context`, else `$KUBECONFIG` or ~/.kube/config); in a pod with none of
those, the pod's service account. Who the user is: `user=`, else the API server's answer
(SelfSubjectReview, or OpenShift's `users/~`), with their groups for `kubernetesGroup` rules.
The namespace: `namespace=`, else the pod's own namespace (an ODH workbench runs in the project),
else the kubeconfig context's.

Policies come from `policies=` (a directory), else `$RAYOPS_POLICY_DIR`, else the ConfigMap
`rayops-policies` that GitOps keeps in rayops' namespace (docs/deploy.md section 4), which the user
must be able to read. Scaling history for `why` comes from rayops' Kubernetes Events in the
namespace (`cluster_events`, as the bot reads them). Requests over a limit wait in the bot's own
store (`bot.kube_store.ConfigMapApprovalStore`: a ConfigMap per request in the cluster's namespace,
written with the user's credentials), so approvers in chat see them with `pending` and approve them
there, and `wait_for_approval` sees their decision.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bot.adapters.base import Platform
from bot.approvals import ApprovalStore
from bot.audit import AuditRecord
from bot.authz import Identity
from bot.chart import EventHistory
from bot.core import Bot
from bot.notebook.errors import SetupError
from bot.notebook.session import RayopsSession
from bot.notebook.usage import DashboardUsage
from bot.settings import BotSettings
from bot.switch import GlobalPause
from controller.backends.base import BackendError
from controller.policy.loader import PolicySet, PolicyStore
from controller.policy.model import ClusterProfile, ScalingPolicy

if TYPE_CHECKING:
    from controller.backends.kube_api import KubeApi

log = logging.getLogger("rayops.notebook")

POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
POLICY_CONFIGMAP = "rayops-policies"


def kube_api_for(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    server: str | None = None,
    token: str | None = None,
    ca_cert: str | None = None,
    verify_tls: bool = True,
) -> KubeApi:
    from controller.backends.kube_api import KubeApi

    if server is not None or token is not None:
        if server is None or token is None:
            raise SetupError("give both server= and token= (or neither, to use the kubeconfig)")
        return KubeApi.from_token(server, token, ca_cert=ca_cert, verify_ssl=verify_tls)
    return KubeApi.from_environment(kubeconfig, context)


def notebook_namespace(
    kubeconfig: str | None = None, context: str | None = None, pod_file: Path = POD_NAMESPACE_FILE
) -> str | None:
    """The pod's namespace (an ODH workbench runs in its project), else the kubeconfig context's."""
    try:
        ns = pod_file.read_text().strip()
        if ns:
            return ns
    except OSError:
        pass
    try:
        from kubernetes import config as k8s_config

        _, current = k8s_config.list_kube_config_contexts(kubeconfig or os.environ.get("KUBECONFIG"))
        if context is not None:
            contexts, _ = k8s_config.list_kube_config_contexts(kubeconfig or os.environ.get("KUBECONFIG"))
            current = next((c for c in contexts if c.get("name") == context), current)
        ns = (current or {}).get("context", {}).get("namespace")
        return str(ns) if ns else None
    except Exception:  # no kubeconfig at all, or an unreadable one: the caller asks for namespace=
        return None


def identity_of(api: KubeApi, user: str | None) -> Identity:
    """`kubernetes:<user>`: the given name, else the API server's own answer (with groups)."""
    if user is not None:
        return Identity(Platform.KUBERNETES, user)
    try:
        who = api.whoami()
    except BackendError as e:
        raise SetupError(f"cannot ask the API server who you are ({e}); pass user=") from e
    if who is None:
        raise SetupError(
            "this API server cannot say who you are (no SelfSubjectReview, not OpenShift); pass user= "
            "with your Kubernetes user name"
        )
    name, groups = who
    return Identity(Platform.KUBERNETES, name, groups=frozenset(groups))


def policy_store(policies: str | Path | None, api: KubeApi, policy_namespace: str) -> PolicyStore:
    """The policy set: a directory, else `$RAYOPS_POLICY_DIR`, else the GitOps ConfigMap copied to a
    private temporary directory (the loader validates a directory as one set)."""
    directory = policies if policies is not None else os.environ.get("RAYOPS_POLICY_DIR")
    if directory is None:
        try:
            cm = api.get_configmap(policy_namespace, POLICY_CONFIGMAP)
        except BackendError as e:
            raise SetupError(
                f"cannot read the policy ConfigMap {policy_namespace}/{POLICY_CONFIGMAP} ({e}); pass "
                "policies= with a copy of the policy directory"
            ) from e
        if cm is None:
            raise SetupError(
                f"no ConfigMap {policy_namespace}/{POLICY_CONFIGMAP}; pass policies= (a directory) or "
                "policy_namespace= where rayops runs"
            )
        tmp = Path(tempfile.mkdtemp(prefix="rayops-policies-"))
        for name, text in (cm.get("data") or {}).items():
            if "/" not in name and not name.startswith("."):
                (tmp / name).write_text(str(text))
        directory = tmp
    store = PolicyStore(str(directory))
    result = store.reload()
    if store.current is None:
        problems = "; ".join(str(e) for e in result.errors[:3])
        raise SetupError(f"the policy set in {directory} is not usable: {problems}")
    return store


class LoggedAudit:
    """The audit trail of a notebook session: the `rayops.audit` logger (the kernel's log). The bot's
    own trail lives with the bot; the API server's audit log names the user for every change."""

    def record(self, rec: AuditRecord) -> None:
        log.info("audit %s", rec.to_dict())


class ReadOnlySwitch:
    """The global pause as the controller reads it on Kubernetes (ConfigMap `rayops-global-pause`),
    so `status` and `why` say when all scaling is paused; setting it is for DevOps, in chat.

    Not the bot's `ConfigMapPauseSwitch`: that one raises when the ConfigMap cannot be read, which
    is right for the bot's own service account, but a data scientist usually may not read rayops'
    namespace, and `status` must not fail for that: unreadable means "not paused" here, as the
    controller's own reader treats it."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        from controller.pause import ConfigMapPause

        self._source = ConfigMapPause(api, namespace)

    def get(self) -> GlobalPause:
        state = self._source.read()
        return GlobalPause(state.paused, state.by)

    def set(self, paused: bool, by: str, at: datetime) -> None:
        raise BackendError("the global switch is set by DevOps in chat (pause-all / resume-all)")


def kube_session(
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
    api: KubeApi | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RayopsSession:
    """Build the Kubernetes session; see the module docstring. `api` replaces the credentials
    lookup (tests, or a caller with its own `KubeApi`)."""
    from bot.kube_store import ConfigMapApprovalStore
    from controller.backends.kuberay import KubeRayBackend
    from controller.backends.kuberay_events import cluster_events

    if api is None:
        api = kube_api_for(
            kubeconfig=kubeconfig,
            context=context,
            server=server,
            token=token,
            ca_cert=ca_cert,
            verify_tls=verify_tls,
        )
    ns = namespace or notebook_namespace(kubeconfig, context)
    if ns is None:
        raise SetupError("no namespace: pass namespace= (the project your notebook works in)")
    identity = identity_of(api, user)
    store = policy_store(policies, api, policy_namespace)

    def current() -> PolicySet | None:
        store.reload()
        return store.current

    def profiles() -> Mapping[str, ClusterProfile]:
        ps = store.current
        return ps.cluster_profiles if ps is not None else {}

    def scaling() -> Mapping[str, ScalingPolicy]:
        ps = store.current
        return ps.scaling_policies if ps is not None else {}

    kube = api
    backend = KubeRayBackend(kube, profiles, policies=scaling, namespaces=[ns], clock=clock)
    settings = BotSettings(
        policy_dir=Path(store.directory),
        state_dir=Path(tempfile.gettempdir()) / "rayops-notebook",
        backend="kuberay",
        default_namespace=ns,
        namespaces=(ns,),
        rayops_namespace=policy_namespace,
    )
    bot = Bot(
        backend,
        current,
        approvals if approvals is not None else ConfigMapApprovalStore(api, [ns]),
        LoggedAudit(),
        ReadOnlySwitch(api, policy_namespace),
        settings,
        history=EventHistory(lambda ref: cluster_events(kube, ref)),
        clock=clock,
    )
    return RayopsSession(
        bot,
        identity,
        namespace=ns,
        usage=DashboardUsage(),
        poll_interval=poll_interval,
        mode="kubernetes",
        on_close=[api.api_client.close],
    )
