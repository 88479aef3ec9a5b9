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

from collections.abc import Callable
from functools import partial
from typing import Any

from modelyard.builders import drift, warming
from modelyard.builders import workload as wl
from modelyard.config import OperatorConfig
from modelyard.reconcile.model.world import ModelWorld
from modelyard.reconcile.rollout import Warming, epoch

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
    now: float,
) -> Warming | None:
    """The warming a rollout to `desired` waits for; None when there is none to wait for: no
    new weights (the same as serve, or none), nothing serving (a new Model's first workers,
    or workers none of which is ready: nothing waits behind them), no node to warm, or no
    image to warm with."""
    main = world.children.get("Deployment")
    image = config.weights_verifier_image
    if workload.weights is None or main is None or image is None:
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
    name = str(model["metadata"]["name"])
    pods = _live_pods(model, world)
    for node in nodes:
        pod = _follow(
            found,
            node,
            warming.warm_pod_name(name, workload.weights, node),
            pods,
            partial(
                warming.warm_pod,
                model,
                deployment=desired,
                node=node,
                image=image,
                deadline_seconds=deadline,
            ),
        )
        if pod is not None:
            _judge(found, node, pod, node, now)
    return found


def scale_up_warming(
    model: Manifest,
    workload: wl.Workload,
    *,
    desired: Manifest,
    desired_hash: str,
    world: ModelWorld,
    main_pods: list[Manifest],
    config: OperatorConfig,
    now: float,
) -> Warming | None:
    """The warming a scale-up waits for: the Model's minimum of workers raised above what its
    Deployment runs (minWorkers raised, or a fixed size grown), on the revision that serves.
    One pod per new worker, placed by the scheduler as that worker would be
    (`builders.warming.scale_up_warm_pod`); the Deployment (or its autoscaler's minimum) is
    held at what runs until each ended.

    None when there is nothing to hold back: no weights, a rollout under way (it warms its
    own), no worker ready (nothing serves that the wait would protect, and the new workers are
    needed at once), or no image to warm with."""
    main = world.children.get("Deployment")
    image = config.weights_verifier_image
    if (
        workload.weights is None
        or main is None
        or world.canary is not None
        or image is None
        or drift.template_hash(main) != desired_hash
        or warming.weights_of(main) != workload.weights
    ):
        return None
    live = _running(world)
    planned = (desired.get("spec") or {}).get("replicas")
    target = int(planned) if planned is not None else workload.scaling.min_workers
    if target <= live or live == 0 or not any(_ready(pod) for pod in main_pods):
        return None
    deadline = max(workload.template.startup_timeout_seconds, warming.DEFAULT_DEADLINE_SECONDS)
    new_workers = tuple(f"worker {ordinal + 1}" for ordinal in range(live, target))
    found = Warming(
        reference=workload.weights,
        nodes=new_workers,
        deadline_seconds=deadline + 60,
        scale_up_to=target,
    )
    name = str(model["metadata"]["name"])
    pods = _live_pods(model, world)
    for ordinal, worker in zip(range(live, target), new_workers, strict=True):
        pod_name = warming.scale_up_warm_pod_name(name, workload.weights, ordinal)
        pod = _follow(
            found,
            worker,
            pod_name,
            pods,
            partial(
                warming.scale_up_warm_pod,
                model,
                deployment=desired,
                worker=ordinal,
                image=image,
                deadline_seconds=deadline,
            ),
        )
        if pod is None:
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        status = pod.get("status") or {}
        if not node:
            # Not placed: it goes once the wait is over (see `Warming.release`), not before —
            # deleted now, the next pass would only make it again.
            found.unplaced.add(pod_name)
        if not node and status.get("unschedulable") and not status.get("nominatedNodeName"):
            # No room for it is no room for the worker: the scale-up goes on, and its workers
            # wait for room as they would have (AwaitingCapacity is theirs to say).
            found.failed[worker] = f"no room: {status['unschedulable']}"[:300]
            found.settled.add(worker)
            continue
        _judge(found, worker, pod, str(node) if node else None, now)
    return found


def _running(world: ModelWorld) -> int:
    """The workers the Model runs, or is about to: its Deployment's count, or its autoscaler's
    minimum if higher — a scale-up released to the autoscaler is not held again while the
    autoscaler has yet to act on it."""
    main = world.children.get("Deployment") or {}
    count = int((main.get("spec") or {}).get("replicas") or 0)
    for kind, field in (
        ("HorizontalPodAutoscaler", "minReplicas"),
        ("ScaledObject", "minReplicaCount"),
    ):
        autoscaler = world.children.get(kind)
        if autoscaler is not None:
            count = max(count, int((autoscaler.get("spec") or {}).get(field) or 0))
    return count


def _live_pods(model: Manifest, world: ModelWorld) -> dict[str, Manifest]:
    """The Model's warming pods by name: those it owns, not on their way out."""
    uid = (model.get("metadata") or {}).get("uid")
    return {
        str((pod.get("metadata") or {}).get("name")): pod
        for pod in world.warm_pods
        if _owned(pod, uid) and not (pod.get("metadata") or {}).get("deletionTimestamp")
    }


def _follow(
    found: Warming,
    key: str,
    name: str,
    pods: dict[str, Manifest],
    make: Callable[[], Manifest],
) -> Manifest | None:
    """The warming pod `name` (for `key`, a node or a new worker) as it is; one to make (and
    None) when there is none yet."""
    found.pods.add(name)
    pod = pods.get(name)
    if pod is None:
        found.missing.append(make())
        found.waiting[key] = "starting"
    return pod


def _judge(found: Warming, key: str, pod: Manifest, node: str | None, now: float) -> None:
    """A warming pod's state, into `found` under `key`: done on `node`, failed, or waiting.
    A pod older than the wait's deadline ends it whatever the status records say (a status
    write refused every pass, a CRD that prunes the record): the wait has a bound of its own."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    where = f"{key} on {node}" if node and node != key else key
    created = epoch((pod.get("metadata") or {}).get("creationTimestamp"))
    overdue = created is not None and now - created > found.deadline_seconds
    if phase not in ("Succeeded", "Failed") and overdue:
        found.failed[where] = f"not warmed within {found.deadline_seconds:g} s"
    elif phase == "Succeeded":
        found.warmed.append(node or key)
    elif phase == "Failed":
        found.failed[where] = str(status.get("reason") or "its warming pod failed")
    elif status.get("waiting") in PULL_REFUSED:
        found.failed[where] = str(status["waiting"])
    else:
        found.waiting[where] = str(status.get("waiting") or phase or "Pending")
        return
    found.settled.add(key)


def unwanted(world: ModelWorld, keep: Warming | None) -> list[str]:
    """The Model's warming pods to delete: all but those of the warming still wanted (`keep`:
    a rollout's candidate that differs from what serves, or a scale-up not made yet)."""
    kept = keep.pods if keep is not None else set()
    uid = (world.model.get("metadata") or {}).get("uid")
    return [
        name
        for pod in world.warm_pods
        if (name := str((pod.get("metadata") or {}).get("name"))) not in kept
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


__all__ = ["scale_up_warming", "unwanted", "warming_for"]
