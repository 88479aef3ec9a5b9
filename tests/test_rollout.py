"""The canary rollout's decisions (`modelyard.reconcile.rollout`), phase by phase, as the
reconciler sees them: what serves, what the canary's pods and probe say, where the last pass
left the rollout. tests/test_canary.py runs the same on the real node."""

from __future__ import annotations

from typing import Any

from modelyard.api.v1alpha1 import ModelState, RolloutStrategy
from modelyard.reconcile import rollout
from modelyard.status import conditions
from modelyard.status.model import Observation

CANARY = rollout.Settings(RolloutStrategy.CANARY, canary_workers=2, analysis_seconds=60)
REVISIONS = rollout.Revisions("old", "new", "1.0.0 (sha256:aa)", "1.1.0 (sha256:bb)")
DESIRED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "m", "namespace": "ns", "labels": {"modelyard.dev/model": "m"}},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"modelyard.dev/model": "m"}},
        "template": {
            "metadata": {
                "labels": {"modelyard.dev/model": "m"},
                "annotations": {"modelyard.dev/spec-hash": "new"},
            },
            "spec": {"containers": [{"name": "model", "image": "i@sha256:bb"}]},
        },
    },
}
MAIN = {"metadata": {"name": "m"}}
LIVE_CANARY = {"metadata": {"name": "m-canary"}}
SERVING = Observation(conditions.passed("Available", "3 of 3"), ModelState.READY, 3, 3)
READY = Observation(conditions.passed("Available", "2 of 2"), ModelState.READY, 2, 2)
CONFORMS = conditions.passed("Conformant", "2 canary workers answer correctly")
NOW = 1_000_000.0


def decide(**given: Any) -> rollout.Step:
    arguments: dict[str, Any] = {
        "desired": DESIRED,
        "main": MAIN,
        "canary": None,
        "main_serving": SERVING,
        "canary_observation": None,
        "canary_verdict": None,
        "has_probe": True,
        "previous": None,
        "generation": 4,
        "now": NOW,
    }
    arguments.update(given)
    rules = arguments.pop("rules", CANARY)
    revisions = arguments.pop("revisions", REVISIONS)
    return rollout.decide(rules, revisions, **arguments)


def under_way(phase: str, **extra: Any) -> dict[str, Any]:
    return {
        "phase": phase,
        "current": REVISIONS.current,
        "candidate": REVISIONS.candidate,
        "candidateRevision": "new",
        **extra,
    }


def test_rolling_rolls_at_once() -> None:
    step = decide(rules=rollout.Settings())
    assert step.roll_main and step.canary is None and step.status is None


def test_a_new_revision_of_a_serving_model_starts_a_canary_beside_it() -> None:
    step = decide()
    assert not step.roll_main
    assert step.phase == "Canary" and step.event is not None and step.event[1] == "Canary"
    canary = step.canary
    assert canary is not None and canary["metadata"]["name"] == "m-canary"
    assert canary["spec"]["replicas"] == 2
    track = {"modelyard.dev/model": "m", "modelyard.dev/track": "canary"}
    assert canary["spec"]["selector"]["matchLabels"] == track
    assert canary["spec"]["template"]["metadata"]["labels"] == track
    # The same pods as the revision would run: the same spec-hash.
    assert canary["spec"]["template"]["spec"] == DESIRED["spec"]["template"]["spec"]


def test_a_model_that_does_not_serve_is_rolled_at_once() -> None:
    broken = Observation(conditions.failed("CrashLoopBackOff", "..."), ModelState.FAILED, 1, 0)
    step = decide(main_serving=broken, canary=LIVE_CANARY)
    assert step.roll_main and step.delete_canary and step.status is None


RESTARTING = Observation(
    conditions.failed("Deploying", "0 of 1 workers ready"), ModelState.DEPLOYING, 1, 0
)
CRASHING = Observation(conditions.failed("CrashLoopBackOff", "..."), ModelState.FAILED, 1, 0)
SCALED_TO_ZERO = Observation(
    conditions.passed("ScaledToZero", "no traffic"), ModelState.SCALED_TO_ZERO, 0, 0
)


def test_a_rolled_back_revision_stays_back_whatever_the_serving_workers_do() -> None:
    """A restart, an eviction, a crash or a scale to zero of the current revision after a
    rollback must not put the rolled-back candidate on the serving Deployment."""
    back = under_way("RolledBack", reason="SchemaMismatch", modelGeneration=4)
    for serving in (RESTARTING, CRASHING, SCALED_TO_ZERO):
        held = decide(previous=back, main_serving=serving)
        assert not held.roll_main, serving
        assert held.status == back and held.canary is None, serving


def test_a_serving_deployment_gone_is_not_made_again_from_a_rolled_back_revision() -> None:
    """Deleted by hand, or its workers withdrawn: nothing serves until the Model changes,
    rather than the revision that was rolled back."""
    back = under_way("RolledBack", reason="CrashLoopBackOff", modelGeneration=4)
    step = decide(previous=back, main=None, main_serving=None)
    assert not step.roll_main and step.status is not None
    assert "not made again" in step.status["message"]
    again = decide(previous=step.status, main=None, main_serving=None)
    assert again.status == step.status, "said once, not appended at every pass"
    assert decide(previous=back, main=None, main_serving=None, generation=5).roll_main


def test_a_candidate_under_analysis_is_judged_to_the_end_through_a_blip() -> None:
    """The serving workers restarting mid-analysis neither skips the analysis nor promotes."""
    analysing = decide(
        canary=LIVE_CANARY,
        canary_observation=READY,
        canary_verdict=CONFORMS,
        previous=under_way("Canary"),
    )
    for serving in (RESTARTING, CRASHING, SCALED_TO_ZERO):
        step = decide(
            canary=LIVE_CANARY,
            canary_observation=READY,
            canary_verdict=CONFORMS,
            previous=analysing.status,
            main_serving=serving,
            now=NOW + 5,
        )
        assert step.phase == "Analysing" and not step.roll_main, serving
    for phase in ("Canary", "AwaitingCapacity"):
        step = decide(canary=LIVE_CANARY, previous=under_way(phase), main_serving=CRASHING)
        assert not step.roll_main and step.phase == "Canary", phase


def test_a_new_candidate_beside_restarting_workers_still_starts_a_canary() -> None:
    for serving in (RESTARTING, SCALED_TO_ZERO):
        step = decide(main_serving=serving)
        assert step.phase == "Canary" and not step.roll_main, serving


def test_failing_canary_workers_roll_back_and_a_full_node_waits() -> None:
    crash = Observation(
        conditions.failed("CrashLoopBackOff", "keeps crashing"), ModelState.FAILED, 2, 0
    )
    step = decide(canary=LIVE_CANARY, canary_observation=crash, previous=under_way("Canary"))
    assert step.phase == "RolledBack" and step.delete_canary and not step.roll_main
    assert step.status is not None and step.status["reason"] == "CrashLoopBackOff"
    assert step.status["modelGeneration"] == 4

    full = Observation(
        conditions.failed("Unschedulable", "0/1 nodes are available: 1 Insufficient cpu."),
        ModelState.DEPLOYING,
        2,
        0,
    )
    step = decide(canary=LIVE_CANARY, canary_observation=full, previous=under_way("Canary"))
    assert step.phase == "AwaitingCapacity" and not step.delete_canary and not step.dip
    assert step.status is not None and "Insufficient cpu" in step.status["message"]
    dipping = rollout.Settings(RolloutStrategy.CANARY, allow_capacity_dip=True)
    assert decide(rules=dipping, canary=LIVE_CANARY, canary_observation=full).phase == "Canary"
    assert decide(
        rules=dipping, canary=LIVE_CANARY, canary_observation=full, previous=under_way("Canary")
    ).dip


def test_the_probe_decides_promotion_or_rollback() -> None:
    waiting = decide(canary=LIVE_CANARY, canary_observation=READY, previous=under_way("Canary"))
    assert waiting.phase == "Analysing" and waiting.status is not None
    assert waiting.status["reason"] == "Probing" and not waiting.roll_main

    first = decide(
        canary=LIVE_CANARY,
        canary_observation=READY,
        canary_verdict=CONFORMS,
        previous=under_way("Canary"),
    )
    assert first.phase == "Analysing" and first.recheck_after == 10.0
    assert first.status is not None and first.status["conformingSince"]

    later = decide(
        canary=LIVE_CANARY,
        canary_observation=READY,
        canary_verdict=CONFORMS,
        previous=first.status,
        now=NOW + 61,
    )
    assert later.phase == "Promoting" and later.roll_main and not later.delete_canary

    wrong = conditions.failed("SchemaMismatch", "chunk_scores: required field is missing")
    step = decide(
        canary=LIVE_CANARY,
        canary_observation=READY,
        canary_verdict=wrong,
        previous=first.status,
        now=NOW + 30,
    )
    assert step.phase == "RolledBack" and step.delete_canary
    assert step.status is not None and step.status["reason"] == "SchemaMismatch"


def test_a_rolled_back_revision_waits_for_a_change_of_the_model() -> None:
    back = under_way("RolledBack", reason="SchemaMismatch", modelGeneration=4)
    held = decide(previous=back)
    assert not held.roll_main and held.canary is None and held.status == back
    # Acknowledged by an edit of the Model: tried again.
    assert decide(previous=back, generation=5).phase == "Canary"
    # A newer version is another revision: tried.
    newer = rollout.Revisions("old", "newer", REVISIONS.current, "1.2.0 (sha256:cc)")
    assert decide(previous=back, revisions=newer).phase == "Canary"


def test_a_promotion_ends_once_every_serving_worker_runs_the_new_revision() -> None:
    promoting = under_way("Promoting")
    settled = rollout.Revisions("new", "new", "", REVISIONS.candidate)
    rolling = Observation(
        conditions.passed("Available", "3 of 3"), ModelState.READY, 4, 3, "rolling out"
    )
    step = decide(revisions=settled, canary=LIVE_CANARY, main_serving=rolling, previous=promoting)
    assert step.phase == "Promoting" and not step.delete_canary
    step = decide(revisions=settled, canary=LIVE_CANARY, previous=promoting)
    assert step.phase == "Promoted" and step.delete_canary
    assert step.event is not None and step.event[1] == "Promoted"


def test_a_withdrawn_candidate_takes_its_canary_and_record_along() -> None:
    settled = rollout.Revisions("old", "old", "", REVISIONS.current)
    step = decide(revisions=settled, canary=LIVE_CANARY, previous=under_way("Analysing"))
    assert step.delete_canary and step.status is None and step.roll_main


def test_conditions_say_where_the_rollout_stands() -> None:
    assert rollout.condition(None) == {}
    analysing = rollout.condition(under_way("Analysing", message="12 of 60 s"))
    assert analysing["Rollout"].status == conditions.UNKNOWN
    assert analysing["Reconciling"].reason == "Analysing"
    back = rollout.condition(under_way("RolledBack", reason="SchemaMismatch"))
    assert back["Rollout"].status == conditions.FALSE and back["Rollout"].reason == "RolledBack"
    assert back["Stalled"].reason == "SchemaMismatch"
    assert rollout.condition(under_way("Promoted"))["Rollout"].ok


def embedder_plan() -> Any:
    """The CPU embedder of examples/05 (2-4 workers, a HorizontalPodAutoscaler)."""
    from modelyard.api.v1alpha1 import parse  # noqa: PLC0415
    from modelyard.builders.plan import plan_model  # noqa: PLC0415
    from modelyard.config import OperatorConfig  # noqa: PLC0415
    from support.examples import example  # noqa: PLC0415

    model = parse(example("Model", "docs-embedder"))
    template = parse(example("ModelTemplate", "cpu-embedding"))
    registries = {"dockerhub": parse(example("Registry", "dockerhub"))}
    plan = plan_model(model, template, registries, [], OperatorConfig())  # type: ignore[arg-type]
    assert plan.workload is not None and plan.children is not None
    return plan


def test_a_capacity_dip_takes_one_autoscaled_worker_and_gives_it_back() -> None:
    from modelyard.reconcile.model.apply import to_apply  # noqa: PLC0415
    from modelyard.reconcile.model.capacity import plan_dip  # noqa: PLC0415
    from modelyard.reconcile.model.world import ModelWorld  # noqa: PLC0415

    plan = embedder_plan()
    serving = {"metadata": {"name": "docs-embedder"}, "spec": {"replicas": 3}}
    world = ModelWorld(model={}, template=None, children={"Deployment": serving})
    waiting = under_way("AwaitingCapacity", message="0/1 nodes are available")
    step = rollout.Step(roll_main=False, status=dict(waiting), dip=True)
    plan_dip(step, world, plan.workload, {})
    # Recorded first: the worker is taken after this pass's status write, and the autoscaler
    # is capped in the next pass, which reads the record.
    assert (step.replicas, step.ceiling) == (2, None)
    assert step.status is not None and step.status["dippedFrom"] == 3
    recorded = {**waiting, "dippedFrom": 3}
    step = rollout.Step(roll_main=False, status=dict(waiting), dip=True)
    plan_dip(step, world, plan.workload, recorded)
    assert (step.replicas, step.ceiling) == (2, 2), "recorded and not yet taken: taken now"
    # The autoscaler may not add the worker back meanwhile.
    (hpa,) = [
        m
        for m in to_apply(plan.children.manifests, False, step)
        if m["kind"] == "HorizontalPodAutoscaler"
    ]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 2)
    # Taken: a later pass leaves the count alone (an autoscaler may go lower meanwhile).
    world.children["Deployment"] = {**serving, "spec": {"replicas": 2}}
    step = rollout.Step(roll_main=False, status=dict(waiting), dip=True)
    plan_dip(step, world, plan.workload, recorded)
    assert (step.replicas, step.ceiling) == (None, 2)

    # Never below minWorkers (2): with two serving, none is spare.
    world.children["Deployment"] = {**serving, "spec": {"replicas": 2}}
    step = rollout.Step(roll_main=False, status=dict(waiting), dip=True)
    plan_dip(step, world, plan.workload, {})
    assert step.replicas is None and step.ceiling is None
    assert step.status is not None and "no serving worker to spare" in step.status["message"]

    # However it ends, the count comes back: here, rolled back.
    back = rollout.Step(roll_main=False, status=under_way("RolledBack"), delete_canary=True)
    plan_dip(back, world, plan.workload, {**waiting, "dippedFrom": 3})
    assert back.replicas == 3 and back.ceiling is None
    # Given back: the record goes, and the count is left to the autoscaler or a raised minimum
    # (it once set the Deployment back to 3 at every pass after, for good).
    world.children["Deployment"] = {**serving, "spec": {"replicas": 4}}
    later = rollout.Step(roll_main=True, status=under_way("RolledBack"))
    plan_dip(later, world, plan.workload, {**under_way("RolledBack"), "dippedFrom": 3})
    assert later.replicas is None, "the worker given back was given back again"
    assert later.status is not None and later.status["dippedFrom"] is None
