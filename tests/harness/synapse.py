"""Fixtures for synapse (filled in by the harness work of issue 2)."""
