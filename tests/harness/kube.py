"""Fixtures for kube (filled in by the harness work of issue 2)."""
