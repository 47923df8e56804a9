"""`RayopsSession.local(...)`: the notebook in laptop mode, on real local Ray.

The same state directory as `rayops up` (default `$RAYOPS_STATE_DIR`, else ~/.local/state/rayops) is
the truth about local clusters, pending approvals, the audit log and the event journal
(contracts.md section 7), so a cluster requested here is the one `rayops up`'s console lists, and
the reverse. The user is `console:<login>` (or `$RAYOPS_CONSOLE_USER`, or `user=`): the identity the
console of `rayops up` gives the same person, so their clusters are theirs in both.

Autoscaling needs a controller acting on the cluster, and only the process holding the controller
lock (`<state dir>/controller.lock`) acts. `start_controller`:

- None (default): if no process holds the lock now, run the controller in this kernel, in
  background threads (`controller.daemon.build_controller`, the same wiring as `rayops controller
  run --backend local`, without its HTTP endpoints); if one does (`rayops up`, `rayops controller
  run`), leave scaling to it;
- True: run it here in any case; it acts as soon as the lock is free (a standby until then);
- False: never; something else must scale (or the cluster keeps its size).

`session.close()` stops an in-process controller (clusters keep running: delete them first, or let
their time-to-live expire under whichever controller runs next). Its log goes to
`<state dir>/notebook-controller.log`, not under the running cell.

Drivers in this kernel: `cluster.connect()` calls `ray.init` with the cluster's address, keeping
the driver on 127.0.0.1 without putting `controller.localray.DRIVER_ENV` in this process's
environment, which the controller's `ray start` children would inherit and fail on (see
`bot.notebook.cluster.loopback_driver`).
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bot.adapters.base import Platform
from bot.authz import Identity
from bot.compose import build_bot
from bot.notebook.errors import SetupError
from bot.notebook.session import RayopsSession
from bot.notebook.usage import DashboardUsage
from bot.settings import BotSettings
from controller import keys
from controller.domain import ClusterRef
from controller.policy.loader import PolicySet, PolicyStore

if TYPE_CHECKING:
    from controller.daemon import Controller

log = logging.getLogger("rayops.notebook")

LOGGERS = ("rayops", "controller", "apscheduler")  # the controller's and rayops' own loggers
LOG_FILE = "notebook-controller.log"  # in the state directory


def lock_is_free(path: Path) -> bool:
    """Whether no process holds the controller lock right now (probed, and released at once)."""
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's lock, if it got it
    return True


def route_logs(path: Path) -> Callable[[], None]:
    """Send the in-kernel controller's log (and the notebook API's) to `path`; returns the undo.

    Without a handler of their own, Python prints warnings through its last-resort handler to
    stderr, which in a notebook means every worker-start retry lands under the running cell. When
    the kernel has no logging set up (no root handler), these loggers write to the file only;
    otherwise they also keep propagating to what the user configured.
    """
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    quiet = not logging.getLogger().handlers
    saved = []
    for name in LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.propagate, lg.level))
        lg.addHandler(handler)
        if quiet:
            lg.propagate = False
            lg.setLevel(logging.INFO)

    def undo() -> None:
        for lg, propagate, level in saved:
            lg.removeHandler(handler)
            lg.propagate = propagate
            lg.setLevel(level)
        handler.close()

    return undo


def local_session(
    state_dir: str | Path | None = None,
    policies: str | Path | None = None,
    *,
    user: str | None = None,
    start_controller: bool | None = None,
    poll_interval: float = 2.0,
) -> RayopsSession:
    """Build the laptop session; see the module docstring."""
    from controller.backends.local import LocalBackend
    from controller.settings import ControllerSettings

    csettings = ControllerSettings.from_env(
        backend="local",
        state_dir=str(state_dir) if state_dir is not None else None,
        policy_dir=str(policies) if policies is not None else None,
        http_port="off",
    )
    if not Path(csettings.policy_dir).is_dir():
        raise SetupError(
            f"no policy directory at {Path(csettings.policy_dir).resolve()}; pass policies= (the "
            "repository's policies/ works) or set RAYOPS_POLICY_DIR"
        )
    settings = BotSettings.from_env(
        policy_dir=Path(csettings.policy_dir),
        state_dir=csettings.state_dir,
        backend="local",
        console_user=user,
        default_namespace=keys.LOCAL_NAMESPACE,
    )
    store = PolicyStore(str(settings.policy_dir))
    result = store.reload()
    if store.current is None:
        problems = "; ".join(str(e) for e in result.errors[:3])
        raise SetupError(f"the policy set in {settings.policy_dir} is not usable: {problems}")

    def current() -> PolicySet | None:
        store.reload()
        return store.current

    run_here = start_controller if start_controller is not None else lock_is_free(csettings.lock_path)
    on_close: list[Callable[[], None]] = []
    controller: Controller | None = None
    if run_here:
        from controller.daemon import build_controller

        settings.state_dir.mkdir(parents=True, exist_ok=True)
        on_close.append(route_logs(settings.state_dir / LOG_FILE))
        controller = build_controller(csettings, serve=False)
        controller.start()
        backend = controller.backend
        on_close.append(controller.stop)
        log.info("controller started in this kernel (lock %s)", csettings.lock_path)
    else:
        backend = LocalBackend(
            lambda: store.current.cluster_profiles if store.current is not None else {},
            state_dir=settings.state_dir,
        )
        on_close.append(backend.close)
        log.info("another process holds %s: it scales the clusters", csettings.lock_path)
    bot = build_bot(settings, backend, current)
    store_of_clusters = backend.store if isinstance(backend, LocalBackend) else None

    def gcs_address(ref: ClusterRef) -> str | None:
        rec = store_of_clusters.read(ref.name) if store_of_clusters is not None else None
        return rec.head.gcs_address if rec is not None and rec.head is not None else None

    return RayopsSession(
        bot,
        Identity(Platform.CONSOLE, settings.console_user),
        namespace=keys.LOCAL_NAMESPACE,
        usage=DashboardUsage(),
        poll_interval=poll_interval,
        mode="local",
        on_close=on_close,
        driver_address=gcs_address,
        controller=controller,
    )
