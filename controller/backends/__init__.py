"""Cluster backends: where decisions become real workers (KubeRay on Kubernetes, or local Ray)."""
