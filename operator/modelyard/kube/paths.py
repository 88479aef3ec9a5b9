"""Where each kind lives on the API, written down rather than discovered.

The client calls explicit paths, so any kind — ours, KEDA's, built-in — is reached the same way,
without per-kind client classes or a discovery round-trip before the first call. The price is
this table: a kind the operator starts to read or write must be added to it (a missing one is a
KeyError at the first call, not a silent miss).
"""

from __future__ import annotations

#: apiVersion/kind → plural, for every kind the operator reads or writes.
PLURALS: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("v1", "Event"): "events",
    ("v1", "Secret"): "secrets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobjects",
    ("modelyard.dev/v1alpha1", "Model"): "models",
    ("modelyard.dev/v1alpha1", "ModelTemplate"): "modeltemplates",
    ("modelyard.dev/v1alpha1", "ModelVersion"): "modelversions",
    ("modelyard.dev/v1alpha1", "Registry"): "registries",
    ("coordination.k8s.io/v1", "Lease"): "leases",
}


def path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    """The URL path of a collection (no `name`) or of one object; cluster-wide without a
    namespace."""
    plural = PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{prefix}{scope}/{plural}" + (f"/{name}" if name else "")
