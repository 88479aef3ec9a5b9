"""Status roll-up: READY only when the workers truly serve, and the real cause otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.api.v1alpha1 import ModelState
from modelyard.status import conditions, reasons
from modelyard.status.model import observe

HASH = "abc123"


def deployment(desired: int | None = 1, **status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"progressDeadlineSeconds": 720}
    if desired is not None:
        spec["replicas"] = desired
    return {
        "metadata": {"name": "m", "generation": 2},
        "spec": spec,
        "status": {"observedGeneration": 2, **status},
    }


def pod(name: str = "m-1", spec_hash: str = HASH, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {"modelyard.dev/spec-hash": spec_hash}},
        "status": status,
    }


def waiting(reason: str, message: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "containerStatuses": [
            {
                "name": "model",
                "image": "img",
                "state": {"waiting": {"reason": reason, "message": message}},
                **extra,
            }
        ]
    }


READY_COUNTS = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1}

CASES = [
    ("no Deployment yet", None, [], 1, ModelState.DEPLOYING, reasons.DEPLOYING),
    (
        "all workers available",
        deployment(**READY_COUNTS),
        [pod()],
        1,
        ModelState.READY,
        reasons.AVAILABLE_REASON,
    ),
    (
        "counts say ready but a pod crash-loops",
        deployment(**READY_COUNTS),
        [
            pod(
                **waiting(
                    "CrashLoopBackOff",
                    restartCount=4,
                    lastState={"terminated": {"exitCode": 1, "reason": "Error"}},
                )
            )
        ],
        1,
        ModelState.FAILED,
        reasons.CRASH_LOOP_BACK_OFF,
    ),
    (
        "image cannot be pulled",
        deployment(desired=1, replicas=1),
        [pod(**waiting("ImagePullBackOff", "not found"))],
        1,
        ModelState.FAILED,
        reasons.IMAGE_PULL_BACK_OFF,
    ),
    (
        "ErrImagePull counts as a pull failure",
        deployment(),
        [pod(**waiting("ErrImagePull"))],
        1,
        ModelState.FAILED,
        reasons.IMAGE_PULL_BACK_OFF,
    ),
    (
        "never passed its startup probe",
        deployment(),
        [
            pod(
                **waiting(
                    "CrashLoopBackOff",
                    started=False,
                    restartCount=2,
                    lastState={"terminated": {"exitCode": 137}},
                )
            )
        ],
        1,
        ModelState.FAILED,
        reasons.STARTUP_TIMEOUT,
    ),
    (
        "no node has a free GPU",
        deployment(),
        [
            pod(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ]
            )
        ],
        1,
        ModelState.DEPLOYING,
        reasons.UNSCHEDULABLE,
    ),
    (
        "rollout stuck past its deadline",
        deployment(
            conditions=[
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ]
        ),
        [],
        1,
        ModelState.FAILED,
        reasons.PROGRESS_DEADLINE_EXCEEDED,
    ),
    (
        "scaled to zero by KEDA",
        deployment(desired=0),
        [],
        0,
        ModelState.SCALED_TO_ZERO,
        reasons.SCALED_TO_ZERO,
    ),
    (
        "rollout in progress, the old workers serve",
        deployment(desired=2, replicas=3, updatedReplicas=1, availableReplicas=2),
        [pod(), pod("m-old-1", spec_hash="old"), pod("m-old-2", spec_hash="old")],
        1,
        ModelState.READY,
        reasons.AVAILABLE_REASON,
    ),
    (
        "rollout in progress, fewer than minWorkers serve",
        deployment(desired=3, replicas=4, updatedReplicas=1, availableReplicas=2),
        [pod(), pod("m-old-1", spec_hash="old"), pod("m-old-2", spec_hash="old")],
        3,
        ModelState.DEPLOYING,
        reasons.DEPLOYING,
    ),
    (
        "Deployment controller has not seen the change: the workers serve through it",
        {**deployment(**READY_COUNTS), "status": {**READY_COUNTS, "observedGeneration": 1}},
        [pod()],
        1,
        ModelState.READY,
        reasons.AVAILABLE_REASON,
    ),
    (
        "a crashing pod of the old revision does not count",
        deployment(**READY_COUNTS),
        [pod(), pod("old", spec_hash="old", **waiting("CrashLoopBackOff"))],
        1,
        ModelState.READY,
        reasons.AVAILABLE_REASON,
    ),
    (
        "replicas unset means one",
        deployment(desired=None, **READY_COUNTS),
        [pod()],
        1,
        ModelState.READY,
        reasons.AVAILABLE_REASON,
    ),
]


SCALING_UP = {"replicas": 3, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 3}
CASES += [
    (
        "an autoscaler adds workers while the first serves",
        deployment(desired=3, **SCALING_UP),
        [pod("m-1"), pod("m-2"), pod("m-3")],
        1,
        ModelState.READY,
        reasons.AVAILABLE_REASON,
    ),
    (
        "all the Deployment asks for serve, but fewer than minWorkers (the HPA has not acted)",
        deployment(desired=1, **READY_COUNTS),
        [pod("m-1")],
        2,
        ModelState.DEPLOYING,
        reasons.DEPLOYING,
    ),
    (
        "fewer than minWorkers serve while scaling",
        deployment(desired=3, **SCALING_UP),
        [pod("m-1"), pod("m-2"), pod("m-3")],
        2,
        ModelState.DEPLOYING,
        reasons.DEPLOYING,
    ),
    (
        "the autoscaler's new scale, not yet seen by the Deployment controller",
        {
            **deployment(desired=3, **READY_COUNTS),
            "metadata": {"name": "m", "generation": 3},
        },
        [pod("m-1", conditions=[{"type": "Ready", "status": "True"}])],
        1,
        ModelState.READY,
        reasons.AVAILABLE_REASON,
    ),
    (
        "a rollout: the old revision serves, the new one starts",
        deployment(desired=1, replicas=2, readyReplicas=1, availableReplicas=1, updatedReplicas=1),
        [pod("m-new"), pod("m-old", spec_hash="old")],
        1,
        ModelState.READY,
        reasons.AVAILABLE_REASON,
    ),
    (
        "a rollout with nothing serving yet",
        deployment(desired=1, replicas=2, readyReplicas=0, availableReplicas=0, updatedReplicas=1),
        [pod("m-new"), pod("m-old", spec_hash="old")],
        1,
        ModelState.DEPLOYING,
        reasons.DEPLOYING,
    ),
    (
        "a rollout whose new worker crash-loops while the old one serves",
        deployment(desired=1, replicas=2, readyReplicas=1, availableReplicas=1, updatedReplicas=1),
        [pod("m-new", **waiting("CrashLoopBackOff")), pod("m-old", spec_hash="old")],
        1,
        ModelState.READY,
        reasons.AVAILABLE_REASON,
    ),
]


def restarted(ran_seconds: int, exit_code: int = 2, state: str = "running") -> dict[str, Any]:
    """A container's status after its last run lasted `ran_seconds`, now `state` again."""
    terminated = {
        "exitCode": exit_code,
        "reason": "Error",
        "startedAt": "2026-11-30T20:25:29Z",
        "finishedAt": f"2026-11-30T20:25:{29 + ran_seconds:02d}Z",
    }
    now = {"running": {}} if state == "running" else {"waiting": {"reason": state}}
    return {
        "containerStatuses": [
            {
                "name": "model",
                "started": False,
                "restartCount": 3,
                "state": now,
                "lastState": {"terminated": terminated},
            }
        ]
    }


@pytest.mark.parametrize(
    ("why", "status", "reason"),
    [
        # The kubelet restarts a container its startup probe gave up on, often at once: running
        # again, and its exit code its own (2: a Go server as PID 1 on SIGTERM).
        ("killed by the startup probe, running again", restarted(20), reasons.STARTUP_TIMEOUT),
        (
            "killed by the startup probe, backing off",
            restarted(20, state="CrashLoopBackOff"),
            reasons.STARTUP_TIMEOUT,
        ),
        (
            "exited by itself early",
            restarted(1, exit_code=1, state="CrashLoopBackOff"),
            reasons.CRASH_LOOP_BACK_OFF,
        ),
    ],
)
def test_startup_timeout_is_told_by_how_long_the_last_run_lasted(
    why: str, status: dict[str, Any], reason: str
) -> None:
    observation = observe(deployment(), [pod(**status)], HASH, 1, startup_timeout=10)
    assert observation.available.reason == reason, why
    assert observation.state is ModelState.FAILED


@pytest.mark.parametrize(
    ("why", "deploy", "pods", "min_workers", "state", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_observed_state(
    why: str,
    deploy: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    min_workers: int,
    state: ModelState,
    reason: str,
) -> None:
    observation = observe(deploy, pods, HASH, min_workers)
    assert (observation.state, observation.available.reason) == (state, reason)
    assert observation.available.ok == (state is ModelState.READY)


def test_unschedulable_message_carries_the_scheduler_words() -> None:
    pods = [
        pod(
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ]
        )
    ]
    assert "Insufficient nvidia.com/gpu" in observe(deployment(), pods, HASH, 1).available.message


def test_last_transition_time_moves_only_on_a_flip() -> None:
    first = conditions.merge(
        None, {"Ready": conditions.failed("Deploying", "0 of 1")}, 1, "2026-01-01T00:00:00Z"
    )
    same = conditions.merge(
        first, {"Ready": conditions.failed("Deploying", "still 0 of 1")}, 2, "2026-01-01T00:05:00Z"
    )
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["observedGeneration"] == 2
    flipped = conditions.merge(
        same, {"Ready": conditions.passed("Available")}, 2, "2026-01-01T00:09:00Z"
    )
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:09:00Z"
    assert (
        conditions.merge(
            flipped, {"Ready": conditions.passed("Available")}, 2, "2027-01-01T00:00:00Z"
        )
        == flipped
    )


def test_a_rollout_that_cannot_finish_is_stalled_while_the_old_workers_serve() -> None:
    rolling = deployment(
        desired=1, replicas=2, readyReplicas=1, availableReplicas=1, updatedReplicas=1
    )
    starting = observe(rolling, [pod("m-new"), pod("m-old", spec_hash="old")], HASH, 1)
    assert starting.stalled is None
    assert starting.progress == "rolling out: 1 of 1 workers updated"
    crashing = observe(
        rolling,
        [pod("m-new", **waiting("CrashLoopBackOff")), pod("m-old", spec_hash="old")],
        HASH,
        1,
    )
    assert crashing.state is ModelState.READY
    assert crashing.stalled is not None and crashing.stalled.reason == reasons.CRASH_LOOP_BACK_OFF
