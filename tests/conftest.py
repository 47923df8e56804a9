"""Session-wide test setup.

Fixtures for real components live in `tests/harness/` (one module each) and are registered here as
pytest plugins, so each can be read on its own. The process guard in `tests/harness/procguard.py`
fails the run if anything the tests started is still alive afterwards.
"""

import pytest

pytest_plugins = [
    "tests.harness.procguard",
    "tests.harness.ray",
    "tests.harness.prometheus",
    "tests.harness.synapse",
    "tests.harness.kube",
    "tests.harness.slack",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each real-component end-to-end test (marked `slow`) one rerun.

    They start real Ray nodes on a 2-core machine, where a node start can time out under load; one
    rerun keeps such a stall from failing CI, while a real regression fails both attempts. pytest
    reports every rerun, so flakiness stays visible. `-p no:rerunfailures` turns the reruns off.
    """
    reruns = config.pluginmanager.hasplugin("rerunfailures")
    for item in items:
        if "tests/backends/test_contract.py" in item.nodeid and "[local]" in item.nodeid:
            item.add_marker(pytest.mark.slow)  # the contract cases on real local Ray
        if reruns and item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))
