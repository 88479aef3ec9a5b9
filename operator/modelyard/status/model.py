"""A Model's state, read from its Deployment and pods, rolled up into Ready.

The rule is: Ready is about serving. A Model is Ready while at least its minimum of workers serve
(one when the minimum is 0), whatever else is going on: an autoscaler adding or removing workers,
a rollout whose new workers are still starting (the Deployment keeps the old ones serving until
they are), even a rollout whose new workers fail. What is under way shows beside it (`progress`,
the Reconciling condition), and a rollout that cannot finish says why (`stalled`), without taking
Ready away from workers that serve. A Model none of whose workers serve is not Ready, and its pods
are read for the real cause (replica counts alone say nothing: KServe's Ready-while-crash-looping
bug) — an image that cannot be pulled, a crash loop, a model that never passed its startup probe, a
GPU the scheduler cannot find.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelyard.api.v1alpha1 import ModelState
from modelyard.status import reasons
from modelyard.status.conditions import Check, failed, passed
from modelyard.weights import REFUSED, VERIFIER_CONTAINER

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
    #: Work under way while the Model serves (a rollout, a scale): what it is, for the
    #: Reconciling condition. None when the Deployment is where its spec says.
    progress: str | None = None
    #: Why the new revision cannot serve while the previous one still does (a crash loop, a
    #: pull that fails): the Model serves, but only a change can finish the rollout.
    stalled: Check | None = None


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


#: Waiting reasons of a container on its way up.
_STARTING = frozenset({"PodInitializing", "ContainerCreating"})


def _weights_refused(status: Manifest, name: str) -> Check | None:
    """Why the weights' init step keeps the runtime from starting, in its own words (the
    termination message): the files are not what was signed, the check could not run, or its
    image cannot be pulled. Once it has passed, earlier runs no longer count."""
    for container in status.get("initContainerStatuses") or []:
        if container.get("name") != VERIFIER_CONTAINER:
            continue
        state = container.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode") == 0:
            return None
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _PULL_FAILURES:
            # The verifier's image, or the weights themselves (an image volume's pull fails
            # on the first container to start): the kubelet's message names which.
            return failed(
                reasons.IMAGE_PULL_BACK_OFF,
                f"pod {name} cannot pull what its weights' check needs: "
                f"{waiting.get('message', '')}".strip(),
            )
        if reason and reason not in _STARTING and reason != "CrashLoopBackOff":
            # The verifier cannot even start (an image whose user is not a number under
            # runAsNonRoot, a broken entrypoint): said, not left to the progress deadline.
            return failed(
                reasons.VERIFIER_FAILED,
                f"pod {name}: the weights' verifier cannot start ({reason}), so the runtime "
                f"does not start: {waiting.get('message', '')}".strip(),
            )
        ended: Manifest = (
            state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
        )
        code = ended.get("exitCode")
        if code in (None, 0):
            return None
        said = str(ended.get("message") or "").strip() or f"exit code {code}"
        if code == REFUSED:
            return failed(
                reasons.WEIGHTS_NOT_VERIFIED,
                f"pod {name}: the weights are not what was signed, so the runtime does not "
                f"start: {said}",
            )
        why = f" ({ended['reason']})" if ended.get("reason") else ""
        return failed(
            reasons.VERIFIER_FAILED,
            f"pod {name}: the weights' verifier failed{why}, so the runtime does not start: {said}",
        )
    return None


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
    refused = _weights_refused(status, name)
    if refused is not None:
        return refused
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
    enough = max(min_workers, 1)

    def result(
        check: Check, state: ModelState, progress: str | None = None, stalled: Check | None = None
    ) -> Observation:
        return Observation(check, state, replicas, ready, progress, stalled)

    def serving(progress: str, stalled: Check | None = None) -> Observation:
        """Ready: enough workers serve while something is under way."""
        message = f"{available} of {desired} workers ready; {progress}"
        return result(
            passed(reasons.AVAILABLE_REASON, message), ModelState.READY, progress, stalled
        )

    current = [
        pod
        for pod in pods
        if ((pod.get("metadata") or {}).get("annotations") or {}).get("modelyard.dev/spec-hash")
        == desired_hash
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    ]
    failures = [f for f in (_pod_failure(pod, startup_timeout) for pod in current) if f is not None]
    # Counts lag the pods (a crash-looping container flips in and out of ready): a worker
    # whose pod shows a failure does not count as serving, whatever the counts say.
    alive = sum(1 for pod in pods if not (pod.get("metadata") or {}).get("deletionTimestamp"))
    available = min(available, alive - len(failures))
    replica_failure = _deployment_condition(deployment, "ReplicaFailure")
    if replica_failure and replica_failure.get("status") == "True":
        # A pod quota, a policy on pods, a LimitRange: the ReplicaSet controller cannot create
        # the workers, and says why only here (and in its FailedCreate Events).
        failures.insert(
            0,
            failed(
                reasons.PODS_REJECTED,
                f"workers cannot be created: {replica_failure.get('message', '')}".strip(),
            ),
        )
    progressing = _deployment_condition(deployment, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        cause = f"; {failures[0].message}" if failures else ""
        failures.insert(
            0,
            failed(
                reasons.PROGRESS_DEADLINE_EXCEEDED,
                f"the rollout made no progress in {spec.get('progressDeadlineSeconds', '?')} s"
                f"{cause}",
            ),
        )
    if failures:
        failure = failures[0]
        # A pod waiting for a GPU may still get one (cluster autoscaler): still deploying.
        waiting = failure.reason == reasons.UNSCHEDULABLE
        if desired > 0 and available >= enough:
            # The new workers fail, the others still serve: the Model serves, the change
            # does not go through.
            if waiting:
                return serving(f"waiting for capacity: {failure.message}")
            return serving(f"the new workers fail: {failure.message}", stalled=failure)
        return result(failure, ModelState.DEPLOYING if waiting else ModelState.FAILED)

    generation = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        if desired > 0 and available >= enough:
            # A new generation: a scale by the autoscaler, or a rollout about to start.
            # The workers serve through it.
            return serving("the Deployment controller has not seen the change yet")
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
            f"scaling down to 0 from {replicas} workers",
        )

    if (
        updated >= desired
        and available >= max(desired, enough)
        and replicas == updated
        and len(current) >= desired
    ):
        return result(
            passed(reasons.AVAILABLE_REASON, f"{available} of {desired} workers ready"),
            ModelState.READY,
        )
    if available >= enough:
        # An autoscaler adding or removing workers, or a rollout whose new workers are
        # starting while the old ones serve: a Model that serves must not flap out of READY.
        if replicas == updated:
            return serving(f"scaling from {replicas} to {desired} workers")
        return serving(f"rolling out: {updated} of {desired} workers updated")
    return result(
        failed(
            reasons.DEPLOYING,
            f"{updated} of {desired} workers updated, {available} available",
        ),
        ModelState.DEPLOYING,
        f"{updated} of {desired} workers updated, {available} available",
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
