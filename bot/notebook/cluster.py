"""`NotebookCluster`: one Ray cluster as a notebook sees it (CodeFlare SDK's `Cluster`, plus rayops).

Every change (`scale`, `pause`, `resume`, `extend`, `delete`) is the chat command of the same name,
run through the bot's pipeline as the notebook's user: the same access rules, limits, approvals,
audit record and wording as in chat. A method call is an explicit act, so the destructive ones
(`delete`, `scale(0)`) do not ask for the confirmation chat asks for. Reads (`status`, the indicator)
go to the backend directly after the same authorization check, because they are frequent and need
the structured value rather than a message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from bot.adapters.base import Reply
from bot.commands.parser import quote
from bot.notebook.errors import RayopsError
from bot.render import to_html, to_text
from controller.backends.base import ClusterState, ClusterStatus
from controller.domain import ClusterRef, Decision
from controller.events import Event
from controller.policy.durations import format_duration

if TYPE_CHECKING:
    from bot.notebook.indicator import Indicator
    from bot.notebook.session import RayopsSession
    from bot.notebook.usage import Usage


def duration_text(value: str | timedelta) -> str:
    """`"4h"` stays as written (the parser checks it); a timedelta becomes the same notation."""
    return format_duration(value) if isinstance(value, timedelta) else str(value)


@dataclass(frozen=True)
class Answer:
    """The bot's answer to a notebook call: shows as plain text in a terminal and as HTML in Jupyter
    (the same rendering as the Matrix adapter)."""

    reply: Reply

    @property
    def text(self) -> str:
        return self.reply.text

    def __str__(self) -> str:
        return to_text(self.reply)

    def __repr__(self) -> str:
        return to_text(self.reply)

    def _repr_html_(self) -> str:
        return to_html(self.reply)


@dataclass(frozen=True)
class Why:
    """Why a cluster has the workers it has: the bot's `why` answer, plus the values behind it (the
    last decision from the `rayops.io/decision` annotation and the recent scaling events from the
    journal or Kubernetes Events)."""

    answer: Answer
    last_decision: Decision | None
    events: tuple[Event, ...]

    @property
    def text(self) -> str:
        return self.answer.text

    def __str__(self) -> str:
        return str(self.answer)

    def __repr__(self) -> str:
        return str(self.answer)

    def _repr_html_(self) -> str:
        return self.answer._repr_html_()


class NotebookCluster:
    """A handle on one cluster; cheap to create (`session.cluster(name)` makes another)."""

    def __init__(self, session: RayopsSession, ref: ClusterRef) -> None:
        self.session = session
        self.ref = ref

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def namespace(self) -> str:
        return self.ref.namespace

    @property
    def label(self) -> str:
        return str(self.ref)

    def __repr__(self) -> str:
        return f"NotebookCluster({self.ref})"

    def _target(self) -> str:
        return quote(str(self.ref))

    # --- reading --------------------------------------------------------------------------------

    def status(self) -> ClusterStatus:
        """The cluster now: state (READY, STARTING, QUEUED, SUSPENDED, FAILED, as CodeFlare names
        them), workers per group, last decision, expiry, connect info. Raises `ClusterGone` once it
        has been deleted, `Refused` if the access rules hide it from this user."""
        return self.session.read(self.ref)

    def read_status(self) -> ClusterStatus:
        """For the indicator: the backend's own errors (ClusterNotFound means deleted)."""
        return self.session.read(self.ref, raw=True)

    def read_usage(self, status: ClusterStatus) -> Usage | None:
        return self.session.usage_of(status)

    def details(self) -> Answer:
        """The chat `status` answer: every field, the group table, connect info."""
        return Answer(self.session.run(f"status {self._target()}"))

    def wait_ready(self, timeout: float = 600.0, poll: float | None = None) -> ClusterStatus:
        """Block until the cluster is READY (CodeFlare's `wait_ready`). Raises `RayopsError` when it
        FAILED, and `TimeoutError` with the last state and the stuck cause when time runs out."""
        poll = poll if poll is not None else self.session.poll_interval
        deadline = time.monotonic() + timeout
        while True:
            s = self.status()
            if s.state is ClusterState.READY:
                return s
            if s.state is ClusterState.FAILED:
                cause = f": {s.stuck_cause}" if s.stuck_cause else ""
                raise RayopsError(Reply(f"{self.name} FAILED{cause}"))
            if time.monotonic() >= deadline:
                cause = f" ({s.stuck_cause})" if s.stuck_cause else ""
                raise TimeoutError(f"{self.name} is still {s.state}{cause} after {timeout:g} s")
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def why(self) -> Why:
        """Recent scaling decisions and the reason for each (or for holding)."""
        answer = Answer(self.session.run(f"why {self._target()}"))
        status = self.session.read(self.ref)
        events = tuple(self.session.bot.history.events(self.ref, 10))
        return Why(answer, status.last_decision, events)

    @property
    def address(self) -> str | None:
        """What to pass to `ray.init(...)`: on Kubernetes the Ray Client address
        (`ray://<name>-head-svc.<ns>.svc:10001`); in laptop mode the head's GCS address
        (`127.0.0.1:<port>`), because a driver on the same host connects directly, and Ray Client's
        per-driver server on a loopback head cannot reach the GCS."""
        c = self.status().connect
        local = self.session.driver_address(self.ref) if self.session.driver_address else None
        return local or (c.client_address if c else None)

    @property
    def dashboard_url(self) -> str | None:
        c = self.status().connect
        return c.dashboard_url if c else None

    @property
    def job_submission_url(self) -> str | None:
        c = self.status().connect
        return c.job_submission_url if c else None

    # --- changing -------------------------------------------------------------------------------

    def scale(self, n: int, group: str | None = None, hold_for: str | timedelta | None = None) -> Answer:
        """Pin a worker group at `n` workers (chat's `scale`): the controller keeps it there instead of
        autoscaling until `resume()` or the pin's end. Over the user's limits it waits for approval
        (`ApprovalPending`)."""
        words = ["scale", self._target(), str(int(n))]
        if group is not None:
            words.append(f"group={quote(group)}")
        if hold_for is not None:
            words.append(f"for={quote(duration_text(hold_for))}")
        return Answer(self.session.run(" ".join(words), confirmed=True))

    def pause(self) -> Answer:
        return Answer(self.session.run(f"pause {self._target()}"))

    def resume(self) -> Answer:
        """Autoscale again: ends a pause and a `scale` pin."""
        return Answer(self.session.run(f"resume {self._target()}"))

    def extend(self, by: str | timedelta) -> Answer:
        """Move the expiry later (chat's `extend`), within the profile's and the user's limits."""
        return Answer(self.session.run(f"extend {self._target()} {quote(duration_text(by))}"))

    def delete(self) -> Answer:
        """Delete the cluster and everything in it (no confirmation: the call is the confirmation)."""
        return Answer(self.session.run(f"delete {self._target()}", confirmed=True))

    # --- following ------------------------------------------------------------------------------

    def indicator(
        self,
        interval: float | None = None,
        *,
        mode: str = "auto",
        out: TextIO | None = None,
    ) -> Indicator:
        """Start the live status indicator (see `bot.notebook.indicator`) and return it."""
        from bot.notebook.indicator import Indicator

        return Indicator(
            self,
            interval=interval if interval is not None else self.session.poll_interval,
            mode=mode,
            out=out,
        ).start()

    def connect(self, **init_kwargs: Any) -> Any:
        """`ray.init(address=self.address, **init_kwargs)`, made safe for loopback laptop clusters.

        A driver reaching a 127.0.0.1 head must not let Ray swap that address for the host's routable
        IP, where nothing listens (`controller.localray.DRIVER_ENV`); see `loopback_driver`. Returns
        what `ray.init` returns.
        """
        address = self.address
        if address is None:
            raise RayopsError(Reply(f"{self.name} has no address yet (it is {self.status().state})"))
        import ray

        if address.startswith("127.0.0.1") or "://127.0.0.1" in address:
            loopback_driver()
        return ray.init(address=address, **init_kwargs)


def loopback_driver() -> None:
    """Make this process a driver that keeps 127.0.0.1 as its address.

    Ray reads `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` (`DRIVER_ENV`) once, at import, into a module
    constant, and decides the driver's IP from that constant at `ray.init`. Setting the constant
    rather than the environment matters in a notebook kernel: a laptop session may run the controller
    in this process, and every `ray start` it spawns inherits the environment, where that variable
    makes a worker refuse to join ("Multi-node Ray clusters are not supported").
    """
    import ray._private.ray_constants as constants

    constants.ENABLE_RAY_CLUSTER = False
