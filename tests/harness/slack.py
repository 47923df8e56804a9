"""Fixtures for slack (filled in by the harness work of issue 2)."""
