"""The only package that talks to the Kubernetes API: one asynchronous client, the informers
that watch the operator's children through it, and the leader election on a Lease."""

from modelyard.kube.client import Kube, Manifest
from modelyard.kube.errors import ApiError, NotLeading
from modelyard.kube.gate import Priority, PriorityGate
from modelyard.kube.login import Credentials
from modelyard.kube.paths import PLURALS, path
from modelyard.kube.pools import CONCURRENCY

__all__ = [
    "CONCURRENCY",
    "PLURALS",
    "ApiError",
    "Credentials",
    "Kube",
    "Manifest",
    "NotLeading",
    "Priority",
    "PriorityGate",
    "path",
]
