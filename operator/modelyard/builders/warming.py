"""Pods that pull a new revision's weights onto a node before any worker of it starts there.

The node's content store is the cache of weights, keyed by their verified digest: a worker
whose weights the node holds mounts them at once (docs/performance.md, "Weights"). So before a
rollout replaces serving workers (a canary, or a rolling update), one short pod per node that
runs them mounts the new weights — which has the kubelet pull them — lists them and ends. Its
container is the operator's own image (`weightsVerifierImage`), so nothing of the model runs
and it needs no shell.

Before a rollout it is placed by `nodeName`, not by the scheduler: the point is this node, and a
pod that only lists files asks for almost nothing. Before a scale-up (`scale_up_warm_pod`) the
nodes are not known yet, so the scheduler places it as it would place the new worker: the
worker's selectors, affinity, tolerations, priority and resources (a GPU too, for the moment
it runs: the room the worker takes right after). Its node then holds the
weights, and the scheduler's ImageLocality score, which counts image volumes (kube-scheduler
1.37, `sumImageScores`), draws the new worker to it.

It carries the Model's name under its own label, never the Model's: the Model's Service and
Deployment select by that one, and a warming pod must never be sent requests, adopted, nor
counted as a worker. Pure, like the rest of `builders`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from modelyard.builders import drift, labels
from modelyard.builders.workload import WEIGHTS_VOLUME

Manifest = dict[str, Any]

#: The container of a warming pod, and the command it runs (`modelyard warm-weights`).
WARM_CONTAINER = "warm-weights"
#: Where a warming pod mounts the weights: any path will do, as nothing but a listing reads it.
WARM_MOUNT = "/weights"
#: A warming pod's deadline, and the rollout's: past it, the rollout goes on without the nodes
#: not warmed yet (the kubelet ends the pod once a pull in progress returns), and their workers
#: pull as they would have.
DEFAULT_DEADLINE_SECONDS = 900


def warm_pod_name(model: str, reference: str, node: str) -> str:
    """One name per (weights, node): applying it again is a no-op, never a second pull."""
    digest = hashlib.sha256(f"{reference}\n{node}".encode()).hexdigest()[:10]
    return f"{model}-warm-{digest}"


def warm_pod(
    model: Manifest,
    *,
    deployment: Manifest,
    node: str,
    image: str,
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS,
) -> Manifest:
    """The pod that pulls `deployment`'s weights onto `node`: the same image volume and pull
    Secrets as the workers (so it is refused exactly where they would be), the workers'
    tolerations (a `nodeName` pod still meets the node's NoExecute taints)."""
    metadata = model["metadata"]
    name = str(metadata["name"])
    worker = deployment["spec"]["template"]["spec"]
    volume = next(v for v in worker.get("volumes") or [] if v.get("name") == WEIGHTS_VOLUME)
    reference = str(volume["image"]["reference"])
    spec: Manifest = {
        "nodeName": node,
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline_seconds,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "volumes": [volume],
        "containers": [
            {
                "name": WARM_CONTAINER,
                "image": image,
                "args": ["warm-weights", WARM_MOUNT],
                "volumeMounts": [
                    {"name": WEIGHTS_VOLUME, "mountPath": WARM_MOUNT, "readOnly": True}
                ],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": {
                    "requests": {"cpu": "10m", "memory": "64Mi"},
                    # Limits too: a namespace's quota on limits admits only pods that set them.
                    # A whole core at most, for moments: at a tenth of one, the image's Python
                    # start took most of the 30 s a rollout waited for 500 MB warmed in 3.
                    "limits": {"cpu": "1", "memory": "128Mi"},
                },
                "securityContext": {
                    "runAsNonRoot": True,
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }
        ],
    }
    for field in ("imagePullSecrets", "tolerations"):
        if worker.get(field):
            spec[field] = worker[field]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": warm_pod_name(name, reference, node),
            "namespace": metadata.get("namespace") or "default",
            "labels": {
                # Not managed-by: the informer of the Model's children (by that label) has no
                # use for them; their own informer selects by WARMS_LABEL.
                "app.kubernetes.io/component": "weights-warming",
                labels.WARMS_LABEL: name,
            },
            "annotations": {labels.WEIGHTS_ANNOTATION: reference},
            "ownerReferences": [labels.owner_reference(name, str(metadata["uid"]))],
        },
        "spec": spec,
    }


#: A scale-up's warming pods carry this label too (value "scale-up"): they spread over nodes by
#: it, and are told apart from a rollout's.
WARMS_FOR_LABEL = "modelyard.dev/warms-for"
SCALE_UP = "scale-up"


def scale_up_warm_pod_name(model: str, reference: str, worker: int) -> str:
    """One name per (weights, worker's ordinal): a scale-up asked again makes no second pod."""
    digest = hashlib.sha256(f"{reference}\nworker {worker}".encode()).hexdigest()[:10]
    return f"{model}-warm-{digest}"


def scale_up_warm_pod(
    model: Manifest,
    *,
    deployment: Manifest,
    worker: int,
    image: str,
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS,
) -> Manifest:
    """The pod that pulls the weights onto the node the scheduler would give the Model's
    `worker`-th worker (counted from 0): placed as that worker would be, holding its resources
    for the moment (so it lands only where one fits, and waits for room as one would), and
    preferring nodes no other warming pod of the Model is on."""
    name = str(model["metadata"]["name"])
    worker_spec = deployment["spec"]["template"]["spec"]
    reference = str(
        next(v for v in worker_spec.get("volumes") or [] if v.get("name") == WEIGHTS_VOLUME)[
            "image"
        ]["reference"]
    )
    pod = warm_pod(
        model, deployment=deployment, node="", image=image, deadline_seconds=deadline_seconds
    )
    spec = pod["spec"]
    del spec["nodeName"]
    for field in ("nodeSelector", "priorityClassName", "schedulerName"):
        if worker_spec.get(field):
            spec[field] = worker_spec[field]
    main = (worker_spec.get("containers") or [{}])[0]
    if main.get("resources"):
        spec["containers"][0]["resources"] = main["resources"]
    affinity = dict(worker_spec.get("affinity") or {})
    anti = dict(affinity.get("podAntiAffinity") or {})
    anti["preferredDuringSchedulingIgnoredDuringExecution"] = [
        *(anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []),
        {
            "weight": 100,
            "podAffinityTerm": {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {
                    "matchLabels": {labels.WARMS_LABEL: name, WARMS_FOR_LABEL: SCALE_UP}
                },
            },
        },
    ]
    affinity["podAntiAffinity"] = anti
    spec["affinity"] = affinity
    pod["metadata"]["name"] = scale_up_warm_pod_name(name, reference, worker)
    pod["metadata"]["labels"][WARMS_FOR_LABEL] = SCALE_UP
    return pod


def weights_of(deployment: Manifest | None) -> str | None:
    """The weights (`host/repository@sha256:…`) a Deployment's workers mount (kept or whole),
    or None."""
    if deployment is None:
        return None
    pod = ((drift.spec_of(deployment) or {}).get("template") or {}).get("spec") or {}
    for volume in pod.get("volumes") or []:
        if volume.get("name") == WEIGHTS_VOLUME and volume.get("image"):
            return str(volume["image"].get("reference") or "") or None
    return None


__all__ = [
    "SCALE_UP",
    "WARMS_FOR_LABEL",
    "WARM_CONTAINER",
    "scale_up_warm_pod",
    "scale_up_warm_pod_name",
    "warm_pod",
    "warm_pod_name",
    "weights_of",
]
