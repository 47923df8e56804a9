"""A live status indicator for one cluster: an ipywidgets HTML box in Jupyter, one line elsewhere.

Why a background thread: the notebook's kernel must stay free for the user's `@ray.remote` work
while the indicator follows the cluster, so a daemon thread polls the backend (one `get`, plus one
dashboard request for usage when reachable) every `interval` seconds and re-renders only when what
it shows changed. The thread stops by itself when the cluster is deleted (it renders a last DELETED
state), when the widget is closed (`widget.close()`, or the output cell cleared), or on `close()`.
A failed read shows "not refreshed: <cause>" beside the last good state and the thread keeps going;
it never raises into the kernel.

Outside a Jupyter kernel the same call writes one status line: rewritten in place (`\\r`, cleared
to the end of the line, cut to the terminal's width) on a TTY, or a plain new line per change when
the output is a file or a pipe (a log stays readable).

Every rendered state is appended to `history` (a `Snapshot` each), so a test or the example
notebook can check that the cluster scaled up and down (`summary()`).
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from bot.notebook.errors import RayopsError
from bot.notebook.snapshot import DELETED, Snapshot, snapshot_of, summarize
from bot.notebook.usage import Usage
from controller.backends.base import BackendError, ClusterNotFound, ClusterStatus

log = logging.getLogger("rayops.notebook")

MAX_HISTORY = 5000  # distinct states kept; a day at one change per 20 s


class Watched(Protocol):
    """What the indicator follows: a cluster it can read (`NotebookCluster` is one)."""

    @property
    def label(self) -> str: ...

    def read_status(self) -> ClusterStatus:
        """The cluster now; raises `ClusterNotFound` once it is gone."""
        ...

    def read_usage(self, status: ClusterStatus) -> Usage | None: ...


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (not a plain IPython terminal). Imports nothing new: without
    IPython already loaded, this is not a kernel."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _TextView:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self._open_line = False  # a TTY line was written and not ended yet

    def show(self, snap: Snapshot) -> None:
        with self._lock:
            if self.tty:
                width = shutil.get_terminal_size((120, 24)).columns - 1
                self.out.write("\r" + snap.line(width) + "\x1b[K")
                self._open_line = True
            else:
                self.out.write(snap.line() + "\n")
            self.out.flush()

    def close(self) -> None:
        """End the rewritten line, once, so the prompt or the next output starts on a new line."""
        with self._lock:
            if self._open_line:
                self._open_line = False
                self.out.write("\n")
                self.out.flush()

    @property
    def closed(self) -> bool:
        return False


class _WidgetView:
    def __init__(self) -> None:
        import ipywidgets
        from IPython.display import display

        self.widget = ipywidgets.HTML(value="<i>rayops: reading the cluster…</i>")
        display(self.widget)

    def show(self, snap: Snapshot) -> None:
        if self.widget.comm is not None:
            self.widget.value = snap.html()

    def close(self) -> None:
        return  # the widget stays, showing the last state; `Indicator.close(remove=True)` removes it

    @property
    def closed(self) -> bool:
        return self.widget.comm is None


class Indicator:
    """Follows one cluster until it is deleted or the indicator is closed; see the module docstring.

    `mode`: "auto" (widget in Jupyter, text elsewhere), "widget", "text", or "none" (record only:
    `history` fills, nothing is shown). `clock` is injectable for tests.
    """

    def __init__(
        self,
        watched: Watched,
        *,
        interval: float = 2.0,
        mode: str = "auto",
        out: TextIO | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if mode not in ("auto", "widget", "text", "none"):
            raise ValueError(f"mode must be auto, widget, text or none (got {mode!r})")
        self.watched = watched
        self.interval = interval
        self.clock = clock
        self.history: list[Snapshot] = []
        self._last: Snapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()
        if mode == "auto":
            mode = "widget" if in_jupyter() else "text"
        self.mode = mode
        self._view: _TextView | _WidgetView | None = None
        if mode == "widget":
            self._view = _WidgetView()
        elif mode == "text":
            self._view = _TextView(out or sys.stdout)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Indicator:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"rayops-indicator-{self.watched.label}", daemon=True
            )
            self._thread.start()
        return self

    def close(self, remove: bool = False) -> None:
        """Stop refreshing (returns once the thread has ended); `remove=True` also removes the widget."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if self._view is not None:
            self._view.close()
        if remove and isinstance(self._view, _WidgetView):
            self._view.widget.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the indicator stops (cluster deleted, closed); True if it has stopped."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def widget(self) -> Any:
        """The ipywidgets HTML widget in widget mode, else None."""
        return self._view.widget if isinstance(self._view, _WidgetView) else None

    @property
    def last(self) -> Snapshot | None:
        return self._last

    def summary(self) -> dict[str, Any]:
        return summarize(list(self.history))

    def _repr_html_(self) -> str:
        return self._last.html() if self._last else "<i>rayops: no status yet</i>"

    def __repr__(self) -> str:
        return self._last.line() if self._last else f"<Indicator {self.watched.label}: no status yet>"

    # --- work ---------------------------------------------------------------------------------

    def refresh(self) -> Snapshot:
        """Read the cluster once, render if anything changed, and return what is shown now."""
        with self._refresh_lock:
            now = self.clock()
            try:
                status = self.watched.read_status()
                snap = snapshot_of(status, now, self.watched.read_usage(status))
            except ClusterNotFound:
                snap = self._gone(now)
            except (BackendError, RayopsError) as e:
                snap = self._stale(now, str(e))
            except Exception as e:  # the thread must outlive any one bad read; the trace goes to the log
                log.exception("indicator refresh of %s failed", self.watched.label)
                snap = self._stale(now, f"{type(e).__name__}: {e}")
            if not snap.same_view(self._last):
                self._record(snap)
            elif self._last is not None and snap.time_left != self._last.time_left:
                self._last = snap
                if self._view is not None:
                    self._view.show(snap)
            return snap

    def _gone(self, now: datetime) -> Snapshot:
        last = self._last
        return Snapshot(
            at=now,
            cluster=last.cluster if last else self.watched.label,
            state=DELETED,
        )

    def _stale(self, now: datetime, error: str) -> Snapshot:
        last = self._last or Snapshot(at=now, cluster=self.watched.label, state="UNKNOWN")
        return replace(last, at=now, error=error)

    def _record(self, snap: Snapshot) -> None:
        self._last = snap
        self.history.append(snap)
        if len(self.history) > MAX_HISTORY:
            del self.history[: len(self.history) - MAX_HISTORY]
        if self._view is not None:
            self._view.show(snap)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._view is not None and self._view.closed:
                    break
                snap = self.refresh()
                if snap.state == DELETED:
                    break
                self._stop.wait(self.interval)
        finally:
            if self._view is not None:
                self._view.close()
