"""Fixtures for prometheus (filled in by the harness work of issue 2)."""
