"""Helpers for tests on the real control plane; on the one without a node, a played kubelet.

The Deployment and ReplicaSet controllers create real pods, the HPA controller scales, and the
garbage collector deletes. On the session's control plane without a node no scheduler or
kubelet runs, so pods stay Pending until a test writes their status (`run_pods`), as a kubelet
would; tests do that only where the pod is not their subject and say why. Where it is, they run
on the real node (`real_node`) and nothing here writes a pod's status.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from support.cluster import MODELS, REGISTRIES, TEMPLATES, VERSIONS, Cluster

DEPLOYMENTS = "apps/v1/deployments"
REPLICASETS = "apps/v1/replicasets"
PODS = "v1/pods"
SERVICES = "v1/services"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
SCALED_OBJECTS = "keda.sh/v1alpha1/scaledobjects"
EVENTS = "v1/events"
SECRETS = "v1/secrets"
#: The label by which a Secret's owner lets modelyard use it.
CONSENT = {"modelyard.dev/use": "true"}

__all__ = [
    "CONSENT",
    "DEPLOYMENTS",
    "EVENTS",
    "HPAS",
    "MODELS",
    "PLURALS",
    "PODS",
    "REGISTRIES",
    "SCALED_OBJECTS",
    "SECRETS",
    "SERVICES",
    "TEMPLATES",
    "VERSIONS",
]

#: kind → group/version/plural, for the kinds tests apply by name.
PLURALS = {
    "Registry": REGISTRIES,
    "ModelTemplate": TEMPLATES,
    "ModelVersion": VERSIONS,
    "Model": MODELS,
    "Secret": SECRETS,
}

SPEC_HASH = "modelyard.dev/spec-hash"
#: Events about these, not about the Deployments of the same name the controllers report on.
OUR_KINDS = frozenset({"Model", "ModelTemplate", "ModelVersion", "Registry"})


def ready_pod_status() -> dict[str, Any]:
    return {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "containerStatuses": [
            {
                "name": "model",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            }
        ],
    }


def current_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """The pods of the Deployment's current pod template (not of a revision being replaced)."""
    deployment = cluster.get(DEPLOYMENTS, namespace, name)
    if deployment is None:
        return []
    wanted = deployment["spec"]["template"]["metadata"].get("annotations", {}).get(SPEC_HASH)
    return [
        pod
        for pod in cluster.list(PODS, namespace, f"modelyard.dev/model={name}")
        if pod["metadata"].get("annotations", {}).get(SPEC_HASH) == wanted
        and not pod["metadata"].get("deletionTimestamp")
    ]


def kubelet_status(pod: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """`status` as a kubelet reports it: whole (a condition or container state from an earlier
    report does not linger), with each container's image."""
    written = {
        "phase": "Pending",
        "conditions": [],
        "containerStatuses": [],
        **copy.deepcopy(status),
    }
    images = {c["name"]: c["image"] for c in pod["spec"]["containers"]}
    for container in written.get("containerStatuses") or []:
        container.setdefault("image", images.get(container["name"], "unknown"))
        container.setdefault("imageID", "")
        container.setdefault("restartCount", 0)
        container.setdefault("ready", False)
    return written


def settled_replicas(cluster: Cluster, namespace: str, name: str) -> int:
    """The replicas the Deployment settles on: its own, raised to the Model's minWorkers (the
    HPA controller does that within its sync period, once the HPA exists)."""
    deployment = cluster.get(DEPLOYMENTS, namespace, name) or {}
    replicas = int((deployment.get("spec") or {}).get("replicas", 1))
    model = cluster.get(MODELS, namespace, name) or {}
    template_name = (model.get("spec") or {}).get("template")
    template = cluster.get(TEMPLATES, namespace, template_name) if template_name else None
    scaling = {
        **(((template or {}).get("spec") or {}).get("scaling") or {}),
        **((model.get("spec") or {}).get("scaling") or {}),
    }
    return max(replicas, int(scaling.get("minWorkers", 1)))


async def run_pods(
    cluster: Cluster,
    namespace: str,
    name: str,
    status: dict[str, Any] | None = None,
    count: int | None = None,
    timeout: float = 30,
) -> list[str]:
    """Play the kubelet for the Deployment's current pods: report `status` (default: running
    and ready) for each pod of the current pod template as the ReplicaSet controller makes it,
    until `count` of them (default: the replicas the Deployment settles on) have reported.

    Pods are reported as they appear because a rollout surges one new pod at a time and makes
    the next only once that one is available. Returns the names of the pods reported on."""
    deadline = time.monotonic() + timeout
    reported: list[str] = []
    while True:
        wanted = count if count is not None else settled_replicas(cluster, namespace, name)
        for pod in current_pods(cluster, namespace, name):
            if len(reported) >= wanted or pod["metadata"]["name"] in reported:
                continue
            await cluster.patch(
                PODS,
                namespace,
                pod["metadata"]["name"],
                {"status": kubelet_status(pod, status or ready_pod_status())},
                subresource="status",
                manager="kubelet",
                merge=True,
            )
            reported.append(pod["metadata"]["name"])
        if len(reported) >= wanted:
            return reported
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the controllers made {len(reported)} of {wanted} pods for {namespace}/{name}"
            )
        await asyncio.sleep(0.05)


async def apply_documents(cluster: Cluster, documents: list[dict[str, Any]]) -> None:
    """`kubectl apply --server-side` of each document, placed in the test's namespace."""
    for document in documents:
        await cluster.apply(cluster.in_namespace(document))


def condition(obj: dict[str, Any] | None, kind: str = "Ready") -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def model_state(cluster: Cluster, name: str) -> tuple[str | None, str | None]:
    """What `kubectl get model` shows in STATE and REASON."""
    model = cluster.get(MODELS, cluster.namespace, name) or {}
    return (model.get("status") or {}).get("state"), condition(model).get("reason")


def events_for(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.list(EVENTS, cluster.namespace)
        if e["involvedObject"]["name"] == name and e["involvedObject"].get("kind") in OUR_KINDS
    ]
