"""Canary rollouts: a new revision serves everyone only once its own workers have answered the
model's contract for a while, and goes by itself when they do not.

A Rolling rollout (the default) replaces the workers one by one as soon as the new ones pass
their readiness check: a version that starts fine but answers off-contract replaces a good one,
and only the probe afterwards says so. With `strategy: Canary`, a new revision of a Model that
serves (a newer version in range, a changed template or parameters) first runs as a small
Deployment beside the current one, `<model>-canary`, whose pods the Model's Service also
selects; its pods are asked the template's probe on their own addresses. The current
Deployment is not touched until the canary is promoted:

- the canary's workers fail (CrashLoopBackOff, ImagePullBackOff, StartupTimeout, a rollout
  deadline) or its answers do not conform (SchemaMismatch, EndpointError): rolled back — the
  canary is deleted, and that revision is not tried again until the Model changes (a newer
  version makes another revision, and is tried);
- the scheduler has no room for it: AwaitingCapacity, with the scheduler's words, until there
  is (or, with `allowCapacityDip`, one current worker makes room);
- it answers correctly for `analysisSeconds`: promoted — the current Deployment rolls to the
  new revision (surge one, never fewer serving), and the canary goes once that is done.

The decision is a function of what the stores hold and of the Model's own status (where the
last rollout stood, since when the canary conforms), so a restarted operator, or a new leader,
carries on where the last one was. Everything here is pure; the reconciler applies it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelyard.api.v1alpha1 import (
    ModelState,
    ModelTemplateSpec,
    Rollout,
    RolloutOverride,
    RolloutPhase,
    RolloutStrategy,
)
from modelyard.builders import labels
from modelyard.status import conditions, reasons
from modelyard.status.model import Observation

Manifest = dict[str, Any]

#: A canary's workers failing so: rolled back. (Unschedulable and PodsRejected wait instead.)
ROLLBACK_REASONS = frozenset(
    {
        reasons.CRASH_LOOP_BACK_OFF,
        reasons.IMAGE_PULL_BACK_OFF,
        reasons.STARTUP_TIMEOUT,
        reasons.PROGRESS_DEADLINE_EXCEEDED,
    }
)
CAPACITY_REASONS = frozenset({reasons.UNSCHEDULABLE, reasons.PODS_REJECTED})
UNDER_WAY = frozenset(
    {
        RolloutPhase.CANARY,
        RolloutPhase.AWAITING_CAPACITY,
        RolloutPhase.ANALYSING,
        RolloutPhase.PROMOTING,
    }
)


@dataclass(frozen=True)
class Settings:
    strategy: RolloutStrategy = RolloutStrategy.ROLLING
    canary_workers: int = 1
    analysis_seconds: int = 60
    allow_capacity_dip: bool = False


def settings(template: ModelTemplateSpec, override: RolloutOverride | None) -> Settings:
    """The template's rollout with the Model's overrides."""
    base = template.rollout or Rollout()
    given = override or RolloutOverride()
    return Settings(
        strategy=given.strategy or base.strategy,
        canary_workers=given.canary_workers or base.canary_workers,
        analysis_seconds=(
            base.analysis_seconds if given.analysis_seconds is None else given.analysis_seconds
        ),
        allow_capacity_dip=(
            base.allow_capacity_dip
            if given.allow_capacity_dip is None
            else given.allow_capacity_dip
        ),
    )


def is_canary_pod(pod: Manifest) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(
        labels.TRACK_LABEL
    ) == labels.CANARY_TRACK


def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


#: Written (as nulls) into every status.rollout but a warming one's: status.rollout is merged
#: key by key, and a refusal or a start time of one rollout's warming must not be read as the
#: next one's.
NOT_WARMING: Manifest = {"warmingSince": None, "warmingRefused": None, "scaleUpTo": None}


@dataclass
class Warming:
    """A new revision's weights on the serving workers' nodes, or the weights on the nodes a
    scale-up's new workers will run on: where they are, where not yet
    (`reconcile.model.warming` reads it from the stores)."""

    reference: str
    #: The nodes to warm; for a scale-up, its new workers ("worker 2", …), nodes not known yet.
    nodes: tuple[str, ...]
    #: Nodes whose warming pod mounted the weights.
    warmed: list[str] = field(default_factory=list)
    #: Node → why its warming pod failed.
    failed: dict[str, str] = field(default_factory=dict)
    #: Node → what its warming pod waits on (ErrImagePull, ContainerCreating, …).
    waiting: dict[str, str] = field(default_factory=dict)
    #: The warming pods still to make.
    missing: list[Manifest] = field(default_factory=list)
    #: Since when the rollout has waited for it (RFC 3339), and until how long after.
    since: str = ""
    deadline_seconds: float = 0.0
    #: A scale-up's: the count of workers it holds back until warming ends (None: a rollout's).
    scale_up_to: int | None = None
    #: The names of this warming's pods, made or to make: the others of the Model go.
    pods: set[str] = field(default_factory=set)
    #: The nodes (a scale-up: the new workers) whose warming ended, warmed or not.
    settled: set[str] = field(default_factory=set)
    #: A scale-up's pods the scheduler has not placed: they go once the wait is over.
    unplaced: set[str] = field(default_factory=set)

    def bounded(self, previous: Manifest | None, candidate: str, now: float) -> None:
        """Ends the wait where it must end: past its deadline (counted from when this
        candidate's warming began), or once the server refused a warming pod (a quota, a
        policy): the nodes not warmed are given up, and their workers pull as they start."""
        last = previous or {}
        ongoing = (
            last.get("phase") == RolloutPhase.WARMING
            and last.get("candidateRevision") == candidate
            and last.get("scaleUpTo") == self.scale_up_to
        )
        since = (epoch(last.get("warmingSince")) if ongoing else None) or now
        self.since = _stamp(since)
        refused = str(last.get("warmingRefused") or "") if ongoing else ""
        overdue = now - since > self.deadline_seconds
        if self.complete or not (refused or overdue):
            return
        why = (
            f"refused: {refused}" if refused else (f"not warmed within {self.deadline_seconds:g} s")
        )
        for node in self.nodes:
            if node not in self.settled:
                self.failed[node] = why
        self.waiting.clear()
        self.missing.clear()

    def release(self) -> None:
        """Once the wait is over, its pods that never ran go in the same pass as the workers
        are asked for: left pending, they would compete with them for the room, or have a
        cluster autoscaler add a node for themselves."""
        if self.complete:
            self.pods -= self.unplaced

    def remaining(self, now: float) -> float:
        """Seconds until the deadline: when to look again though nothing else changes."""
        return max(1.0, self.deadline_seconds - (now - (epoch(self.since) or now)))

    @property
    def complete(self) -> bool:
        return len(self.warmed) + len(self.failed) >= len(self.nodes)

    def progress(self) -> str:
        """In words, for status.rollout.message."""
        if self.scale_up_to is None:
            said = f"the new weights are on {len(self.warmed)} of {len(self.nodes)} nodes"
        else:
            said = (
                f"scaling up to {self.scale_up_to} workers once the weights are on their nodes: "
                f"{len(self.warmed)} of {len(self.nodes)} new workers' nodes hold them"
            )
        notes = [f"{node}: {why}" for node, why in sorted(self.failed.items())]
        notes += [f"{node}: {why}" for node, why in sorted(self.waiting.items())]
        return f"{said} ({'; '.join(notes)})" if notes else said


@dataclass
class Step:
    """What this pass does about the rollout."""

    #: Apply the main Deployment as planned (the new revision); False: leave it as it runs.
    roll_main: bool = True
    #: The canary Deployment to apply, or None.
    canary: Manifest | None = None
    delete_canary: bool = False
    #: status.rollout as it is to be (None: none).
    status: Manifest | None = None
    #: Ask for another pass after this many seconds (the analysis ends).
    recheck_after: float | None = None
    #: An Event for a change of phase: (type, reason, message).
    event: tuple[str, str, str] | None = None
    #: The canary waits for room and may take a serving worker's (allowCapacityDip).
    dip: bool = False
    #: The serving Deployment's count to set (a worker taken away, or given back), and its
    #: autoscaler's ceiling meanwhile; None: as planned (see `reconcile.model.capacity.plan_dip`).
    replicas: int | None = None
    ceiling: int | None = None
    #: Warming pods to make (the new revision's weights pulled onto a node first), and the
    #: names of those to delete (their warming is over).
    warm: list[Manifest] = field(default_factory=list)
    cold: list[str] = field(default_factory=list)
    #: A scale-up held back while its weights are warmed: the serving workers' count (and an
    #: autoscaler's minimum) stays at most this; None: as planned.
    hold: int | None = None

    @property
    def phase(self) -> str | None:
        return None if self.status is None else str(self.status.get("phase"))


def condition(status: Manifest | None) -> dict[str, conditions.Check]:
    """The Rollout condition for status.rollout (none without a rollout), and kstatus's
    Reconciling or Stalled beside it: a rollout under way is work in progress; a rollback is
    stalled until the Model changes (Flux and Argo CD say so: the change did not go out)."""
    if not status:
        return {}
    phase = str(status.get("phase"))
    words = f"{status.get('current', '?')} → {status.get('candidate', '?')}"
    message = status.get("message") or ""
    text = f"{words}: {message}" if message else words
    if phase == RolloutPhase.PROMOTED:
        return {reasons.ROLLOUT: conditions.passed(reasons.PROMOTED, text)}
    if phase == RolloutPhase.ROLLED_BACK:
        cause = str(status.get("reason") or reasons.ROLLED_BACK)
        check = conditions.failed(reasons.ROLLED_BACK, f"{text} ({cause})")
        return {reasons.ROLLOUT: check, reasons.STALLED: conditions.passed(cause, text)}
    return {
        reasons.ROLLOUT: conditions.unknown(phase, text),
        reasons.RECONCILING: conditions.passed(phase, text),
    }


@dataclass(frozen=True)
class Revisions:
    """The two revisions in play, by pod-template hash, and in words for people."""

    current_hash: str | None
    candidate_hash: str
    current: str
    candidate: str


def decide(
    rules: Settings,
    revisions: Revisions,
    *,
    desired: Manifest,
    main: Manifest | None,
    canary: Manifest | None,
    main_serving: Observation | None,
    canary_observation: Observation | None,
    canary_verdict: conditions.Check | None,
    has_probe: bool,
    previous: Manifest | None,
    generation: int | None,
    now: float | None = None,
    warming: Warming | None = None,
) -> Step:
    """What to do about the rollout in this pass.

    `main_serving` is the main Deployment observed on its own (current) revision,
    `canary_observation` the canary observed on the candidate's; `canary_verdict` the probe's
    verdict on the canary's pods (None: not asked yet); `warming` the candidate's new weights on
    the serving workers' nodes (None: nothing to pull first), which a canary waits for."""
    now = time.time() if now is None else now
    previous = previous or {}
    phase = previous.get("phase")
    same_candidate = previous.get("candidateRevision") == revisions.candidate_hash
    rolling_out = (
        rules.strategy is RolloutStrategy.CANARY
        and main is not None
        and revisions.current_hash is not None
        and revisions.current_hash != revisions.candidate_hash
    )
    if (
        main is None
        and phase == RolloutPhase.ROLLED_BACK
        and same_candidate
        and previous.get("modelGeneration") == generation
    ):
        # The serving Deployment is gone (deleted by hand, or its workers withdrawn): it is not
        # made again from the revision that was rolled back. Nothing serves until the Model
        # changes.
        gone = "the serving Deployment is gone and is not made again from this revision"
        message = str(previous.get("message") or "")
        status = {**previous, "message": message if gone in message else f"{message}; {gone}"}
        return Step(roll_main=False, delete_canary=canary is not None, status=status)
    if not rolling_out:
        return _settled(
            revisions,
            canary=canary,
            main_serving=main_serving,
            previous=previous,
            same_candidate=same_candidate,
            generation=generation,
        )
    assert main_serving is not None
    if (
        phase == RolloutPhase.ROLLED_BACK
        and same_candidate
        and previous.get("modelGeneration") == generation
    ):
        # Not again until the Model (or what it resolves to) changes — whatever the serving
        # workers do meanwhile: a restart, an eviction or a scale to zero of the current
        # revision is no verdict on the candidate, which failed on its own pods.
        return Step(roll_main=False, delete_canary=canary is not None, status=previous)
    judging = same_candidate and phase in UNDER_WAY
    broken = (
        main_serving.state is ModelState.FAILED or main_serving.available.reason in CAPACITY_REASONS
    )
    if broken and not main_serving.available.ok and not judging:
        # Nothing serves to protect: a Model whose workers fail (crash loop, failed pulls) or
        # cannot be placed is rolled at once. Only before a rollout starts: once a candidate is
        # being judged, it is judged to the end, or a blip of the serving workers would promote
        # it unchecked. (Starting, restarting or scaled-to-zero workers are not broken: a
        # canary still runs.)
        return Step(roll_main=True, delete_canary=canary is not None, status=None)
    base: Manifest = {
        "current": revisions.current,
        "candidate": revisions.candidate,
        "candidateRevision": revisions.candidate_hash,
        **NOT_WARMING,
    }
    fresh = not same_candidate or phase not in UNDER_WAY
    if fresh and warming is not None and not warming.complete:
        return warming_step(
            base,
            warming,
            announce=not same_candidate or phase != RolloutPhase.WARMING,
            canary=canary,
            now=now,
            before="its canary starts",
        )
    warmed_on = (
        (sorted(warming.warmed) if warming is not None else [])
        if fresh
        else list(previous.get("warmedOn") or [])
    )
    # Always written, even empty: status.rollout is merged, and a list from an earlier
    # rollout would otherwise stay and steer this one's canary.
    base["warmedOn"] = warmed_on
    canary_manifest = _canary(desired, rules.canary_workers, warmed_on)
    if fresh:
        status = {**base, "phase": RolloutPhase.CANARY.value, "reason": reasons.CANARY}
        status["message"] = f"{rules.canary_workers} canary workers of the new revision starting"
        if warmed_on:
            status["message"] += f"; its weights are on {len(warmed_on)} nodes already"
        return Step(
            roll_main=False,
            canary=canary_manifest,
            status=status,
            event=(
                "Normal",
                reasons.CANARY,
                f"canary {revisions.candidate} beside {revisions.current}",
            ),
        )
    observed = canary_observation
    failure = observed.available if observed is not None and not observed.available.ok else None
    if failure is not None and failure.reason in ROLLBACK_REASONS:
        return _rolled_back(base, failure.reason, failure.message, canary, generation)
    if failure is not None and failure.reason in CAPACITY_REASONS:
        status = {
            **base,
            "phase": RolloutPhase.AWAITING_CAPACITY.value,
            "reason": reasons.AWAITING_CAPACITY,
            "message": failure.message,
        }
        announce = phase != RolloutPhase.AWAITING_CAPACITY
        return Step(
            roll_main=False,
            canary=canary_manifest,
            status=status,
            dip=rules.allow_capacity_dip,
            event=("Warning", reasons.AWAITING_CAPACITY, failure.message) if announce else None,
        )
    if observed is None or observed.state is not ModelState.READY:
        status = {**base, "phase": RolloutPhase.CANARY.value, "reason": reasons.CANARY}
        status["message"] = (
            observed.available.message if observed is not None else "the canary is being created"
        )
        return Step(roll_main=False, canary=canary_manifest, status=status)
    if has_probe and canary_verdict is None:
        status = {
            **base,
            "phase": RolloutPhase.ANALYSING.value,
            "reason": reasons.PROBING,
            "message": "the canary's workers are ready; asking them the probe",
        }
        return Step(roll_main=False, canary=canary_manifest, status=status)
    if has_probe and canary_verdict is not None and not canary_verdict.ok:
        return _rolled_back(base, canary_verdict.reason, canary_verdict.message, canary, generation)
    since = epoch(previous.get("conformingSince")) if phase == RolloutPhase.ANALYSING else None
    since = since or now
    elapsed = now - since
    if elapsed < rules.analysis_seconds:
        what = "answering the probe correctly" if has_probe else "running without a failure"
        status = {
            **base,
            "phase": RolloutPhase.ANALYSING.value,
            "reason": reasons.ANALYSING,
            "message": f"the canary has been {what} for {int(elapsed)} of "
            f"{rules.analysis_seconds} s",
            "conformingSince": _stamp(since),
        }
        announce = phase != RolloutPhase.ANALYSING
        return Step(
            roll_main=False,
            canary=canary_manifest,
            status=status,
            recheck_after=min(rules.analysis_seconds - elapsed, 10.0),
            event=("Normal", reasons.ANALYSING, status["message"]) if announce else None,
        )
    status = {
        **base,
        "phase": RolloutPhase.PROMOTING.value,
        "reason": reasons.PROMOTING,
        "message": f"the canary answered correctly for {rules.analysis_seconds} s; the current "
        "workers roll to the new revision",
        "conformingSince": _stamp(since),
    }
    return Step(
        roll_main=True,
        canary=canary_manifest,
        status=status,
        event=("Normal", reasons.PROMOTING, status["message"]),
    )


def warming_step(
    base: Manifest,
    warming: Warming,
    *,
    announce: bool,
    canary: Manifest | None,
    now: float,
    before: str,
) -> Step:
    """Nothing of the new revision starts before its weights are on the nodes that serve
    (`base`: the revisions in play, as status.rollout names them; `before`: what waits)."""
    status = {
        **base,
        "phase": RolloutPhase.WARMING.value,
        "reason": reasons.WARMING,
        "message": warming.progress(),
        "warmingSince": warming.since,
    }
    return Step(
        roll_main=False,
        # A canary of another candidate, replaced by this one: it goes now, not after warming.
        delete_canary=canary is not None,
        status=status,
        warm=list(warming.missing),
        recheck_after=min(60.0, warming.remaining(now)),
        event=(
            "Normal",
            reasons.WARMING,
            f"pulling the weights of {base['candidate']} onto {len(warming.nodes)} nodes "
            f"before {before}",
        )
        if announce
        else None,
    )


def scale_up_step(base: Manifest, warming: Warming, *, announce: bool, now: float) -> Step:
    """A scale-up held back until its weights are on the nodes its new workers will run on:
    what serves is left as it is (and the Model judged on it), the new workers come once
    warming ended."""
    assert warming.scale_up_to is not None
    # What runs as the warming counted it (an autoscaler's minimum included): held lower, a
    # scale-up already released to the autoscaler would be taken back.
    live = warming.scale_up_to - len(warming.nodes)
    status = {
        **base,
        "phase": RolloutPhase.WARMING.value,
        "reason": reasons.WARMING,
        "message": warming.progress(),
        "warmingSince": warming.since,
        "scaleUpTo": warming.scale_up_to,
    }
    return Step(
        status=status,
        warm=list(warming.missing),
        hold=live,
        recheck_after=min(60.0, warming.remaining(now)),
        event=(
            "Normal",
            reasons.WARMING,
            f"pulling the weights onto the nodes of {len(warming.nodes)} new workers before "
            f"scaling up from {live} to {warming.scale_up_to}",
        )
        if announce
        else None,
    )


def _canary(desired: Manifest, workers: int, prefer_nodes: list[str] | None = None) -> Manifest:
    from modelyard.builders import workload  # noqa: PLC0415 -- keeps this module's imports light

    return workload.canary_deployment(desired, workers, prefer_nodes)


def _rolled_back(
    base: Manifest, cause: str, message: str, canary: Manifest | None, generation: int | None
) -> Step:
    status = {
        **base,
        "phase": RolloutPhase.ROLLED_BACK.value,
        "reason": cause,
        "message": message,
        "modelGeneration": generation,
    }
    return Step(
        roll_main=False,
        delete_canary=canary is not None,
        status=status,
        event=(
            "Warning",
            reasons.ROLLED_BACK,
            f"{base['candidate']} rolled back ({cause}): {message}; {base['current']} serves",
        ),
    )


def _settled(
    revisions: Revisions,
    *,
    canary: Manifest | None,
    main_serving: Observation | None,
    previous: Manifest,
    same_candidate: bool,
    generation: int | None,
) -> Step:
    """No rollout to start: either none is wanted, or a promotion is finishing."""
    phase = previous.get("phase")
    if phase == RolloutPhase.WARMING:
        # Warming before a rolling update ended (the update goes on), or its candidate was
        # withdrawn: no rollout to record either way.
        return Step(roll_main=True, delete_canary=canary is not None, status=None)
    if phase == RolloutPhase.PROMOTING and same_candidate:
        done = (
            main_serving is not None
            and main_serving.state is ModelState.READY
            and main_serving.progress is None
        )
        if not done:
            # The canary keeps serving until every current worker runs the new revision.
            return Step(roll_main=True, status=previous)
        status = {
            **previous,
            **NOT_WARMING,
            "phase": RolloutPhase.PROMOTED.value,
            "reason": reasons.PROMOTED,
            "message": "every worker runs the new revision; the canary is gone",
        }
        status.pop("conformingSince", None)
        return Step(
            roll_main=True,
            delete_canary=canary is not None,
            status=status,
            event=("Normal", reasons.PROMOTED, f"{revisions.candidate} promoted"),
        )
    if phase in UNDER_WAY:
        # The candidate was withdrawn (the spec went back to what serves, or the strategy
        # changed): its canary goes, and so does the record of a rollout nobody wants.
        return Step(
            roll_main=True,
            delete_canary=canary is not None,
            status=None,
            event=(
                "Normal",
                reasons.WITHDRAWN,
                "the spec no longer asks for the canary's revision",
            ),
        )
    if phase == RolloutPhase.ROLLED_BACK and previous.get("modelGeneration") != generation:
        # The Model changed since: the rollback is acknowledged.
        return Step(roll_main=True, delete_canary=canary is not None, status=None)
    return Step(roll_main=True, delete_canary=canary is not None, status=previous or None)
