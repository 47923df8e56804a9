"""Fixtures for ray (filled in by the harness work of issue 2)."""
