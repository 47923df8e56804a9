"""Which names Kubernetes accepts for a RayCluster and a namespace. Pure.

The bot's parser refuses a bad name before anything is asked for, and every backend refuses one
the API server would refuse, with the same sentence; so the rules are written once, here, rather
than in one backend that the others import.
"""

from __future__ import annotations

import re

# A RayCluster name becomes Service names (`<name>-head-svc`), which must be DNS-1035 labels of at
# most 63 characters; hence a letter first and room for the longest suffix.
CLUSTER_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_CLUSTER_NAME = 63 - len("-head-svc")
NAMESPACE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAMESPACE_NAME = 63


def cluster_name_problem(name: str) -> str | None:
    """Why `name` cannot name a RayCluster, or None when it can."""
    if not name:
        return "a cluster name cannot be empty"
    if len(name) > MAX_CLUSTER_NAME:
        return f"a cluster name has at most {MAX_CLUSTER_NAME} characters (got {len(name)})"
    if not CLUSTER_NAME.match(name):
        return (
            "a cluster name uses lowercase letters, digits and '-', starts with a letter and ends "
            "with a letter or digit"
        )
    return None


def namespace_problem(namespace: str) -> str | None:
    if not namespace or len(namespace) > MAX_NAMESPACE_NAME or not NAMESPACE_NAME.match(namespace):
        return (
            "a namespace uses lowercase letters, digits and '-' (at most 63), starting and ending "
            "with a letter or digit"
        )
    return None
