"""Whether a new revision's weights are on the nodes that serve the Model yet.

A rollout that changes a Model's weights waits for them first (`reconcile.rollout`): the nodes
running its serving workers — where a rolling update replaces them, where a promotion rolls
them, where a canary is most likely to land — each get a short pod that mounts the new weights
(`builders.warming`), so the kubelet pulls them into the node's content store before any worker
of the new revision starts there. Read from the stores only; the pods it asks for are made by
`apply`.

A warming pod that fails (its pull refused, its deadline passed, the node full) ends warming
on its node all the same: the rollout goes on, and its workers meet the same cause in their
own status, where the rollout judges it as it always does. The pods stay until the rollout no
longer needs them (the new revision serves, or another is asked for), so a pass that loses its
status write finds warming done rather than starting it again.
"""

from __future__ import annotations

from typing import Any

from modelyard.builders import drift, labels, warming
from modelyard.builders import workload as wl
from modelyard.config import OperatorConfig
from modelyard.reconcile.model.world import ModelWorld
from modelyard.reconcile.rollout import Warming

Manifest = dict[str, Any]

#: A warming pod waiting on these will not mount the weights without a change: done, failed.
PULL_REFUSED = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
#: A worker's pod that ended (evicted, rejected by the kubelet) runs nowhere.
ENDED = frozenset({"Failed", "Succeeded"})


def warming_for(
    model: Manifest,
    workload: wl.Workload,
    *,
    desired: Manifest,
    desired_hash: str,
    world: ModelWorld,
    main_pods: list[Manifest],
    config: OperatorConfig,
) -> Warming | None:
    """The warming a rollout to `desired` waits for; None when there is none to wait for: no
    new weights (the same as serve, or none), nothing serving (a new Model's first workers,
    or workers none of which is ready: nothing waits behind them), no node to warm, or no
    image to warm with."""
    main = world.children.get("Deployment")
    if workload.weights is None or main is None or config.weights_verifier_image is None:
        return None
    if drift.template_hash(main) == desired_hash or warming.weights_of(main) == workload.weights:
        return None
    nodes = sorted(
        {
            str(node)
            for pod in main_pods
            if (node := (pod.get("spec") or {}).get("nodeName"))
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase") not in ENDED
        }
    )
    if not nodes or not any(_ready(pod) for pod in main_pods):
        # Nothing serves to protect (workers crash-looping, all starting): the new revision
        # rolls at once, as it would have.
        return None
    deadline = max(workload.template.startup_timeout_seconds, warming.DEFAULT_DEADLINE_SECONDS)
    # The operator's wait outlasts the pods' own deadline a little: the kubelet's word first.
    found = Warming(reference=workload.weights, nodes=tuple(nodes), deadline_seconds=deadline + 60)
    uid = (model.get("metadata") or {}).get("uid")
    pods = {
        str((pod.get("spec") or {}).get("nodeName")): pod
        for pod in world.warm_pods
        if _weights(pod) == workload.weights
        and _owned(pod, uid)
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    }
    for node in nodes:
        pod = pods.get(node)
        if pod is None:
            found.missing.append(
                warming.warm_pod(
                    model,
                    deployment=desired,
                    node=node,
                    image=config.weights_verifier_image,
                    deadline_seconds=deadline,
                )
            )
            found.waiting[node] = "starting"
            continue
        status = pod.get("status") or {}
        phase = status.get("phase")
        if phase == "Succeeded":
            found.warmed.append(node)
        elif phase == "Failed":
            found.failed[node] = str(status.get("reason") or "its warming pod failed")
        elif status.get("waiting") in PULL_REFUSED:
            found.failed[node] = str(status["waiting"])
        else:
            found.waiting[node] = str(status.get("waiting") or phase or "Pending")
    return found


def unwanted(world: ModelWorld, keep: Warming | None) -> list[str]:
    """The Model's warming pods to delete: all but those of the rollout's candidate, while it
    still differs from what serves (`keep`)."""
    kept = keep.reference if keep is not None else None
    uid = (world.model.get("metadata") or {}).get("uid")
    return [
        str((pod.get("metadata") or {}).get("name"))
        for pod in world.warm_pods
        if _weights(pod) != kept
        and _owned(pod, uid)
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    ]


def _ready(pod: Manifest) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _owned(pod: Manifest, uid: Any) -> bool:
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(owner.get("uid") == uid for owner in owners)


def _weights(pod: Manifest) -> str | None:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(labels.WEIGHTS_ANNOTATION)
    return str(value) if value else None


__all__ = ["unwanted", "warming_for"]
