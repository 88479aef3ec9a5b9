"""A Model's state, read from its Deployment and pods, rolled up into Ready.

The rule is: Ready is True only when the current revision's workers are all up and none of them
is failing. Available replica counts alone are not enough (KServe's Ready-while-crash-looping bug):
the pods themselves are read for the real cause — an image that cannot be pulled, a crash loop, a
model that never passed its startup probe, a GPU the scheduler cannot find.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelyard.api.v1alpha1 import ModelState
from modelyard.status import reasons
from modelyard.status.conditions import Check, failed, passed

Manifest = dict[str, Any]

_PULL_FAILURES = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
)


@dataclass(frozen=True)
class Observation:
    """What the workload looks like now, reduced to what decides the Model's state."""

    available: Check
    state: ModelState
    replicas: int
    ready_replicas: int


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        return (
            datetime.fromisoformat(end.replace("Z", "+00:00"))
            - datetime.fromisoformat(start.replace("Z", "+00:00"))
        ).total_seconds()
    except ValueError:
        return None


def _timed_out(container: Manifest, startup_timeout: int | None) -> bool:
    """Whether the kubelet killed the container for failing its startup probe, rather than
    the container exiting by itself.

    The exit code cannot tell: a server that handles SIGTERM exits 0 or 2, and PID 1 in a
    container ignores a signal it has no handler for. What tells is how long it ran: a
    container restarted by the startup probe ran its whole budget without ever passing it."""
    if container.get("started") is not False:
        return False
    last = (container.get("lastState") or {}).get("terminated") or {}
    ran = _seconds_between(last.get("startedAt"), last.get("finishedAt"))
    if ran is not None and startup_timeout:
        # Timestamps have whole seconds.
        return ran >= startup_timeout - 1
    return last.get("exitCode") in (137, 143)


def _pod_failure(pod: Manifest, startup_timeout: int | None = None) -> Check | None:
    """The first reason this pod cannot serve that is the user's to fix, if any."""
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return failed(
                reasons.UNSCHEDULABLE, f"pod {name}: {condition.get('message', '')}".strip()
            )
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        message = waiting.get("message", "")
        if reason in _PULL_FAILURES:
            return failed(
                reasons.IMAGE_PULL_BACK_OFF,
                f"pod {name} cannot pull {container.get('image', 'its image')}: {message}".strip(),
            )
        restarted = int(container.get("restartCount") or 0) > 0
        if (reason == "CrashLoopBackOff" or restarted) and _timed_out(container, startup_timeout):
            # Running again or waiting to: the kubelet restarts a container its startup probe
            # gave up on, often at once, so the loop shows in the last run, not the state.
            return failed(
                reasons.STARTUP_TIMEOUT,
                f"pod {name}: the model did not pass its startup probe in time and was "
                f"restarted {container.get('restartCount', 0)} times; raise "
                "startupTimeoutSeconds if it loads slowly",
            )
        if reason == "CrashLoopBackOff":
            last = (container.get("lastState") or {}).get("terminated") or {}
            exit_code = last.get("exitCode")
            detail = (
                f" (exit code {exit_code}: {last.get('reason', '')})"
                if exit_code is not None
                else ""
            )
            return failed(
                reasons.CRASH_LOOP_BACK_OFF,
                f"pod {name} keeps crashing{detail}, restarted "
                f"{container.get('restartCount', 0)} times",
            )
    return None


def _pod_ready(pod: Manifest) -> bool:
    return any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in (pod.get("status") or {}).get("conditions") or []
    )


def _deployment_condition(deployment: Manifest, kind: str) -> Manifest | None:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def observe(
    deployment: Manifest | None,
    pods: list[Manifest],
    desired_hash: str,
    min_workers: int,
    startup_timeout: int | None = None,
) -> Observation:
    """Decide the workload's state from the Deployment and the Model's pods (whose startup
    budget is `startup_timeout` seconds)."""
    if deployment is None:
        return Observation(
            failed(reasons.DEPLOYING, "waiting for the Deployment to be created"),
            ModelState.DEPLOYING,
            0,
            0,
        )
    status = deployment.get("status") or {}
    spec = deployment.get("spec") or {}
    desired = int(spec.get("replicas", 1))
    replicas = int(status.get("replicas", 0))
    ready = int(status.get("readyReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    updated = int(status.get("updatedReplicas", 0))

    def result(check: Check, state: ModelState) -> Observation:
        return Observation(check, state, replicas, ready)

    current = [
        pod
        for pod in pods
        if ((pod.get("metadata") or {}).get("annotations") or {}).get("modelyard.dev/spec-hash")
        == desired_hash
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    ]
    failures = [f for f in (_pod_failure(pod, startup_timeout) for pod in current) if f is not None]
    replica_failure = _deployment_condition(deployment, "ReplicaFailure")
    if replica_failure and replica_failure.get("status") == "True":
        # A pod quota, a policy on pods, a LimitRange: the ReplicaSet controller cannot create
        # the workers, and says why only here (and in its FailedCreate Events).
        return result(
            failed(
                reasons.PODS_REJECTED,
                f"workers cannot be created: {replica_failure.get('message', '')}".strip(),
            ),
            ModelState.FAILED,
        )
    progressing = _deployment_condition(deployment, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        cause = f"; {failures[0].message}" if failures else ""
        return result(
            failed(
                reasons.PROGRESS_DEADLINE_EXCEEDED,
                f"the rollout made no progress in {spec.get('progressDeadlineSeconds', '?')} s"
                f"{cause}",
            ),
            ModelState.FAILED,
        )
    if failures:
        failure = failures[0]
        # A pod waiting for a GPU may still get one (cluster autoscaler): still deploying.
        state = (
            ModelState.DEPLOYING if failure.reason == reasons.UNSCHEDULABLE else ModelState.FAILED
        )
        return result(failure, state)

    generation = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    serving = sum(1 for pod in current if _pod_ready(pod))
    if generation is not None and (observed is None or observed < generation):
        if desired > 0 and serving >= max(min_workers, 1):
            # A new generation whose pods are already the current revision: the autoscaler
            # changed the scale. The workers serve through it.
            return result(
                passed(
                    reasons.AVAILABLE_REASON,
                    f"{serving} workers ready; scaling to {desired}",
                ),
                ModelState.READY,
            )
        return result(
            failed(reasons.DEPLOYING, "the Deployment controller has not seen the change yet"),
            ModelState.DEPLOYING,
        )

    if desired == 0:
        if replicas == 0 and min_workers == 0:
            return result(
                failed(
                    reasons.SCALED_TO_ZERO,
                    "no workers run: minWorkers is 0 and there is no traffic; workers start "
                    "when requests arrive",
                ),
                ModelState.SCALED_TO_ZERO,
            )
        return result(
            failed(reasons.DEPLOYING, f"scaling down to 0 from {replicas} workers"),
            ModelState.DEPLOYING,
        )

    if (
        updated >= desired
        and available >= desired
        and replicas == updated
        and len(current) >= desired
    ):
        return result(
            passed(reasons.AVAILABLE_REASON, f"{available} of {desired} workers ready"),
            ModelState.READY,
        )
    if replicas == updated and available >= max(min_workers, 1):
        # Every worker is of the current revision and at least the minimum serve: the
        # autoscaler is adding (or removing) workers. That is not a rollout, and a Model that
        # serves must not flap out of READY each time its autoscaler acts.
        return result(
            passed(
                reasons.AVAILABLE_REASON,
                f"{available} of {desired} workers ready, {desired - available} starting",
            ),
            ModelState.READY,
        )
    return result(
        failed(
            reasons.DEPLOYING,
            f"{updated} of {desired} workers updated, {available} available",
        ),
        ModelState.DEPLOYING,
    )


def autoscaling(planned: Check, autoscaler: Manifest | None) -> Check:
    """The Autoscaling condition: what the plan chose, unless the autoscaler itself says it
    cannot scale (no metrics API, a metric that does not exist, a ScaledObject not Ready).

    The Model stays Ready while its workers serve, but `minWorkers forever` is never silent.
    """
    if not planned.ok or autoscaler is None:
        return planned
    found = {c.get("type"): c for c in (autoscaler.get("status") or {}).get("conditions") or []}
    kind = autoscaler.get("kind", "")
    if kind == "HorizontalPodAutoscaler":
        active, able = found.get("ScalingActive"), found.get("AbleToScale")
        if active and active.get("status") == "False":
            return failed(
                reasons.METRICS_UNAVAILABLE,
                f"the HorizontalPodAutoscaler cannot scale ({active.get('reason', '')}): "
                f"{active.get('message', '')}",
            )
        if able and able.get("status") == "False":
            return failed(
                reasons.AUTOSCALER_UNABLE,
                f"the HorizontalPodAutoscaler cannot scale ({able.get('reason', '')}): "
                f"{able.get('message', '')}",
            )
    elif kind == "ScaledObject":
        ready = found.get("Ready")
        if ready and ready.get("status") == "False":
            return failed(
                reasons.SCALER_NOT_READY,
                f"the KEDA ScaledObject is not Ready ({ready.get('reason', '')}): "
                f"{ready.get('message', '')}",
            )
    return planned
