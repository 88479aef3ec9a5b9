"""The only package that talks to the Kubernetes API: one asynchronous client, and the
informers that watch the operator's children through it."""

from modelyard.kube.client import (
    CONCURRENCY,
    PLURALS,
    ApiError,
    Credentials,
    Kube,
    Manifest,
    NotLeading,
    Priority,
    PriorityGate,
    path,
)

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
