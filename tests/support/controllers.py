"""The test plays the cluster's controllers: the Deployment controller, the scheduler, kubelet.

Nothing runs pods on the emulated API, so these helpers write what those controllers would: pods
carrying the Deployment's pod-template labels and annotations, their status, and the
Deployment's status counts.
"""

from __future__ import annotations

import copy
from typing import Any

from support.emulator import Cluster

DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
MODELS = "modelyard.dev/v1alpha1/models"
TEMPLATES = "modelyard.dev/v1alpha1/modeltemplates"
REGISTRIES = "modelyard.dev/v1alpha1/registries"
VERSIONS = "modelyard.dev/v1alpha1/modelversions"
SERVICES = "v1/services"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
SCALED_OBJECTS = "keda.sh/v1alpha1/scaledobjects"
EVENTS = "v1/events"

PLURALS = {
    "Registry": REGISTRIES,
    "ModelTemplate": TEMPLATES,
    "ModelVersion": VERSIONS,
    "Model": MODELS,
    "Secret": "v1/secrets",
}

READY_CONTAINER = {
    "name": "model",
    "ready": True,
    "started": True,
    "restartCount": 0,
    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
}


def ready_pod_status() -> dict[str, Any]:
    return {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "containerStatuses": [copy.deepcopy(READY_CONTAINER)],
    }


async def run_pods(
    cluster: Cluster,
    namespace: str,
    name: str,
    status: dict[str, Any] | None = None,
    count: int | None = None,
    ready: bool = True,
) -> list[str]:
    """Start the Deployment's current revision: pods with `status`, and the Deployment's counts."""
    deployment = cluster.get(DEPLOYMENTS, namespace, name)
    assert deployment is not None, f"no Deployment {namespace}/{name}"
    template = deployment["spec"]["template"]
    desired = count if count is not None else deployment["spec"].get("replicas", 1)
    spec_hash = template["metadata"]["annotations"]["modelyard.dev/spec-hash"]
    for pod in cluster.list(PODS, namespace):
        if pod["metadata"]["labels"].get("modelyard.dev/model") == name:
            await cluster.remove(PODS, namespace, pod["metadata"]["name"])
    names = []
    for index in range(desired):
        pod_name = f"{name}-{spec_hash[:6]}-{index}"
        await cluster.create(
            PODS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "labels": dict(template["metadata"]["labels"]),
                    "annotations": dict(template["metadata"]["annotations"]),
                },
                "spec": copy.deepcopy(template["spec"]),
            },
        )
        await cluster.patch(
            PODS,
            namespace,
            pod_name,
            {"status": status or ready_pod_status()},
            subresource="status",
            manager="kubelet",
        )
        names.append(pod_name)
    available = desired if ready else 0
    await cluster.patch(
        DEPLOYMENTS,
        namespace,
        name,
        {
            "status": {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": desired,
                "updatedReplicas": desired,
                "readyReplicas": available,
                "availableReplicas": available,
            }
        },
        subresource="status",
        manager="kube-controller-manager",
    )
    return names


async def apply_documents(cluster: Cluster, documents: list[dict[str, Any]]) -> None:
    for document in documents:
        await cluster.create(PLURALS[document["kind"]], document, manager="kubectl")


def condition(obj: dict[str, Any] | None, kind: str = "Ready") -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def events_for(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [e for e in cluster.list(EVENTS) if e["involvedObject"]["name"] == name]
