"""Session-wide test setup.

Fixtures for real components live in `tests/harness/` (one module each) and are registered here as
pytest plugins, so each can be read on its own. The process guard in `tests/harness/procguard.py`
fails the run if anything the tests started is still alive afterwards.
"""

pytest_plugins = [
    "tests.harness.procguard",
    "tests.harness.ray",
    "tests.harness.prometheus",
    "tests.harness.synapse",
    "tests.harness.kube",
    "tests.harness.slack",
]
