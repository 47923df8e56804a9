"""The example notebook, executed headless (nbclient) against laptop mode on real Ray (issue 9, first test).

The notebook runs in a real Jupyter kernel: it requests a cluster from the local backend (the
controller runs in the kernel, as it does when no `rayops up` holds the lock), shows the indicator
widget, runs a parallel `@ray.remote` workload, waits for the scale-down and deletes the cluster.
The test points it at a private state directory and at a policy set with short windows
(tests/notebook/fixtures/laptop-policies), reads the indicator's recorded states back from the JSON
file the notebook writes, and checks that the desired worker count went up and back down.

Every process the kernel starts inherits a marker variable unique to this run; afterwards none may
be alive. If the notebook failed half-way, the finalizer deletes whatever the state directory still
records (the local backend stops those processes by pid) before the check.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from controller import keys
from controller.backends.local import LocalBackend
from controller.backends.local_caps import LocalCaps
from controller.domain import ClusterRef
from tests.harness.procguard import processes_in_sessions

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "notebooks" / "laptop-demo.ipynb"
LAPTOP_POLICIES = Path(__file__).parent / "fixtures" / "laptop-policies"
RUN_MARKER = "RAYOPS_NOTEBOOK_TEST_RUN"
CELL_TIMEOUT_S = 600


def marked(token: str) -> list[tuple[int, str]]:
    """Live processes carrying this run's marker, and every process in their sessions (Ray's agents
    rename themselves and may lose their environment, but not their session)."""
    entry = f"{RUN_MARKER}={token}".encode()
    found: dict[int, str] = {}
    sids: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if entry not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            found[int(proc.name)] = (
                (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
            if int(fields[3]) != os.getsid(0):
                sids.add(int(fields[3]))
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError, ValueError):
            continue
    found.update(processes_in_sessions(sids))
    return sorted(found.items())


def purge_state_dir(state_dir: Path) -> list[str]:
    """Delete every local cluster the state directory still records; returns their names."""
    if not (state_dir / "clusters").is_dir():
        return []
    backend = LocalBackend({}, state_dir=state_dir, caps=LocalCaps.from_machine(check_available=False))
    names = backend.store.names()
    for name in names:
        backend.purge(ClusterRef(keys.LOCAL_NAMESPACE, name))
    return names


@pytest.mark.slow
@pytest.mark.timeout(2 * CELL_TIMEOUT_S + 120)
def test_the_example_notebook_scales_up_and_down_on_real_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    record = tmp_path / "indicator.json"
    token = uuid.uuid4().hex
    for name, value in {
        "RAYOPS_STATE_DIR": str(state_dir),
        "RAYOPS_POLICY_DIR": str(LAPTOP_POLICIES),
        "RAYOPS_NOTEBOOK_RECORD": str(record),
        "RAYOPS_CONSOLE_USER": "notebook-test",
        RUN_MARKER: token,
    }.items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    try:
        client.execute()
    finally:
        leftover_clusters = purge_state_dir(state_dir)
    assert leftover_clusters == [], f"the notebook left clusters behind: {leftover_clusters}"
    survivors = marked(token)
    assert survivors == [], f"processes the notebook started are still alive: {survivors}"

    data = json.loads(record.read_text())
    summary, states = data["summary"], data["states"]
    seen = [(s["state"], s["ready"], s["desired"], s["action"]) for s in states]
    assert summary["scaled_up"] and summary["scaled_down"] and summary["deleted"], (summary, seen)
    live = [s for s in states if s["state"] != "DELETED" and s["error"] is None]
    desired = [s["desired"] for s in live]
    peak = desired.index(max(desired))
    assert max(desired) >= 2, seen  # eight waiting tasks: more than one worker wanted
    assert desired[0] == 0 and desired[-1] == 0, seen  # from no workers, back to none
    assert min(desired[peak:]) < max(desired), seen  # down after the peak
    assert {"up", "down"} <= set(summary["actions"]), (summary, seen)
    assert any(s["ready"] >= 2 for s in live), seen  # the workers asked for came up
    assert states[-1]["state"] == "DELETED"

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, "the indicator was not displayed as a widget in the kernel"
