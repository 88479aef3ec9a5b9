"""A canary rollout's capacity dip (`allowCapacityDip`), pure: which count the serving
Deployment gets and which ceiling its autoscaler, while a canary takes a worker's room and after.
Pure because its order against the status write is what keeps a worker from being lost: see
`plan_dip`."""

from __future__ import annotations

from typing import Any

from modelyard.api.v1alpha1 import (
    RolloutPhase,
)
from modelyard.builders import workload as wl
from modelyard.reconcile import rollout
from modelyard.reconcile.model.world import ModelWorld

Manifest = dict[str, Any]


def capped(manifest: Manifest, ceiling: int) -> Manifest:
    """An autoscaler that may not add back the worker a canary took (allowCapacityDip)."""
    spec = dict(manifest.get("spec") or {})
    if manifest["kind"] == "HorizontalPodAutoscaler":
        spec["maxReplicas"] = ceiling
        spec["minReplicas"] = min(int(spec.get("minReplicas", 1)), ceiling)
    elif manifest["kind"] == "ScaledObject":
        spec["maxReplicaCount"] = ceiling
    else:
        return manifest
    return {**manifest, "spec": spec}


def held(manifest: Manifest, count: int) -> Manifest:
    """A scale-up held back while its weights are warmed: the serving Deployment's count, or
    its autoscaler's minimum, no higher than `count` (what runs). An autoscaler still adds
    workers for load meanwhile: those are not held back."""
    spec = dict(manifest.get("spec") or {})
    if manifest["kind"] == "Deployment" and "replicas" in spec:
        spec["replicas"] = min(int(spec["replicas"]), count)
    elif manifest["kind"] == "HorizontalPodAutoscaler" and "minReplicas" in spec:
        spec["minReplicas"] = min(int(spec["minReplicas"]), count)
    elif manifest["kind"] == "ScaledObject" and "minReplicaCount" in spec:
        spec["minReplicaCount"] = min(int(spec["minReplicaCount"]), count)
    else:
        return manifest
    return {**manifest, "spec": spec}


def plan_dip(
    step: rollout.Step, world: ModelWorld, workload: wl.Workload, before: Manifest
) -> None:
    """Whether a serving worker makes room for the canary, or comes back: sets the step's
    `replicas` (the serving Deployment's new count) and `ceiling` (its autoscaler's).

    The count taken from is recorded in status.rollout (`dippedFrom`), so the worker comes
    back however the rollout ends — promoted, rolled back or withdrawn — even after a
    restart of the operator. The record comes first: the pass writes it before it takes the
    worker (`reconcile_model`), and a recorded dip is taken from the recorded count, never
    from the live one. A status write that fails, a Lease lost or a SIGTERM between the two
    then leaves a dip recorded and not yet taken (the next pass takes it), never a worker
    taken and not recorded (the next pass would take another, and give back too few)."""
    main = world.children.get("Deployment")
    dipped_from = before.get("dippedFrom")
    status = step.status
    under_way = step.phase in (
        RolloutPhase.CANARY,
        RolloutPhase.AWAITING_CAPACITY,
        RolloutPhase.ANALYSING,
    )
    if main is None:
        return
    if isinstance(dipped_from, int):
        if under_way and status is not None:
            status["dippedFrom"] = dipped_from
            status["message"] = (
                f"{status['message']}; one of the {dipped_from} serving workers makes room for it"
            )
            step.ceiling = max(dipped_from - 1, 1)
            if int((main.get("spec") or {}).get("replicas") or 0) > dipped_from - 1:
                step.replicas = max(dipped_from - 1, 0)  # recorded, not yet taken
            return
        # Over: the worker comes back. A promotion first lets the canary go, since the room
        # it takes is the room the serving workers need to roll.
        if step.phase == RolloutPhase.PROMOTING:
            step.delete_canary = world.canary is not None
        if int((main.get("spec") or {}).get("replicas") or 0) >= dipped_from:
            # Given back, as the Deployment shows: the record goes, or every later pass would
            # set the count back to it, against an autoscaler or a raised minimum.
            if status is not None:
                # A copy: a settled rollout's status may be the stored one itself.
                step.status = {**status, "dippedFrom": None}
            return
        step.replicas = dipped_from
        return
    if not step.dip or status is None:
        return
    replicas = int((main.get("spec") or {}).get("replicas") or 0)
    minimum = workload.scaling.min_workers
    target = replicas - 1
    if target < minimum and not (minimum == 1 and target == 0):
        status["message"] = (
            f"{status['message']}; no serving worker to spare ({replicas} serve, minWorkers "
            f"{minimum})"
        )
        return
    # Taken once recorded (after this pass's status write); the autoscaler's ceiling too, in
    # the next pass, which reads the record: a ceiling applied now would have the autoscaler
    # take the worker before the record is written.
    step.replicas = target
    status["dippedFrom"] = replicas
    status["message"] = (
        f"{status['message']}; one of the {replicas} serving workers makes room for it"
    )


def serving_count(step: rollout.Step | None, deployment: Manifest | None) -> tuple[int | None, int]:
    """The serving Deployment's count this pass sets for a capacity dip (None: none), and
    the count it has now."""
    live = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)
    if step is None or step.replicas is None or deployment is None:
        return None, live
    return step.replicas, live
