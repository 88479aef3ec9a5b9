"""New weights pulled onto the serving workers' nodes before any worker of the new revision
starts (`builders.warming`, `reconcile.model.warming`, `reconcile.rollout`): what a pass
decides from the stores. tests/test_weights.py runs a canary of new weights on the real node
and reads the kubelet's own word that they were on the node before its pod started."""

from __future__ import annotations

from typing import Any

from modelyard.builders import labels, warming
from modelyard.builders.plan import Plan, plan_model
from modelyard.handlers.trim import trim_pod, trim_warm_pod
from modelyard.reconcile import rollout
from modelyard.reconcile.model.apply import to_apply
from modelyard.reconcile.model.canary import rollout_step
from modelyard.reconcile.model.flow import reconcile_model
from modelyard.reconcile.model.warming import scale_up_warming
from modelyard.reconcile.model.world import ModelWorld, desired_revision
from modelyard.status import reasons
from support.cluster import Session
from test_builders import CONFIG, registries, typed
from test_rollout import decide, under_way
from test_weights import DIGEST, ready

VERIFIER = "registry.example/modelyard@sha256:" + "7" * 64
NOW_SECONDS = 1_790_000_000.0
WARMING_CONFIG = CONFIG.model_copy(update={"weights_verifier_image": VERIFIER})
OLD = "sha256:" + "4" * 64
MODEL = {
    "apiVersion": "modelyard.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "iris-from-weights", "namespace": "ns", "uid": "u-1", "generation": 2},
}


def plan_on(digest: str, **changes: Any) -> Plan:
    """The example Model's plan with the weights version at `digest` verified."""
    version = typed(
        "ModelVersion",
        "iris-weights-1-0-0",
        status=ready({"weights": f"quay.io/acme/iris-weights@{digest}"}),
    )
    found = plan_model(
        typed("Model", "iris-from-weights"),
        typed("ModelTemplate", "mlflow-weights", **changes),
        {**registries(), "ghcr": typed("Registry", "ghcr")},
        [version],
        WARMING_CONFIG,
        allow_tag=True,
    )
    assert found.children is not None, found.checks
    return found


def worker(name: str, node: str) -> dict[str, Any]:
    return trim_pod(
        {
            "metadata": {"name": name, "labels": {labels.MODEL_LABEL: "iris-from-weights"}},
            "spec": {"nodeName": node},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )


def world_of(serving: Plan, warm_pods: list[dict[str, Any]] | None = None) -> ModelWorld:
    assert serving.children is not None
    return ModelWorld(
        model=MODEL,
        template=None,
        children={"Deployment": serving.children.deployment},
        pods=[worker("iris-a", "node-a"), worker("iris-b", "node-b")],
        warm_pods=warm_pods or [],
    )


def step_for(
    plan: Plan, world: ModelWorld, previous: dict[str, Any] | None = None, **config: Any
) -> rollout.Step:
    assert plan.workload is not None and plan.children is not None
    return rollout_step(
        typed("Model", "iris-from-weights"),
        plan.workload,
        desired=plan.children.deployment,
        desired_hash=desired_revision(plan),
        world=world,
        main_pods=world.pods,
        prober=None,
        config=WARMING_CONFIG.model_copy(update=config),
        previous=previous or {},
    )


def ended(pod: dict[str, Any], phase: str, reason: str | None = None) -> dict[str, Any]:
    """A warming pod as the informer keeps it once the kubelet ended it."""
    return trim_warm_pod({**pod, "status": {"phase": phase, "reason": reason}})


def test_a_rolling_update_of_new_weights_waits_until_every_serving_node_holds_them() -> None:
    serving, candidate = plan_on(OLD), plan_on(DIGEST)
    step = step_for(candidate, world_of(serving))
    assert not step.roll_main, "workers of the new weights started before the weights were pulled"
    assert step.status is not None and step.status["phase"] == "Warming"
    assert "on 0 of 2 nodes" in step.status["message"]
    assert step.event is not None and step.event[1] == reasons.WARMING
    by_node = {pod["spec"]["nodeName"]: pod for pod in step.warm}
    assert set(by_node) == {"node-a", "node-b"}
    pod = by_node["node-a"]
    workers = candidate.children.deployment["spec"]["template"]["spec"]  # type: ignore[union-attr]
    # The same weights and pull Secrets as the workers: refused exactly where they would be.
    assert pod["spec"]["volumes"] == [workers["volumes"][0]]
    assert pod["spec"]["imagePullSecrets"] == workers["imagePullSecrets"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == VERIFIER and container["args"][0] == "warm-weights"
    # Never one of the Model's workers: not selected by its Service nor its Deployment.
    assert labels.MODEL_LABEL not in pod["metadata"]["labels"]
    assert pod["metadata"]["labels"][labels.WARMS_LABEL] == "iris-from-weights"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u-1"

    # One node done, one still pulling: still held, and the status says where it stands.
    done = ended(by_node["node-a"], "Succeeded")
    pulling = trim_warm_pod(
        {
            **by_node["node-b"],
            "status": {
                "phase": "Pending",
                "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}],
            },
        }
    )
    step = step_for(candidate, world_of(serving, [done, pulling]), {"rollout": step.status})
    assert not step.roll_main and step.warm == [] and step.cold == []
    assert step.status is not None
    assert step.status["message"] == (
        "the new weights are on 1 of 2 nodes (node-b: ContainerCreating)"
    )
    assert step.event is None, "the same warming announced again"

    # Both done: the workers roll, and no rollout is left on record. The warming pods stay
    # until the new revision serves: a pass that lost its write finds warming done.
    finished = [done, ended(by_node["node-b"], "Succeeded")]
    step = step_for(candidate, world_of(serving, finished), {"rollout": step.status})
    assert step.roll_main and step.status is None and step.cold == []
    again = step_for(candidate, world_of(serving, finished), {"rollout": {"phase": "Warming"}})
    assert again.roll_main and again.warm == [], "warming started again"
    rolled = world_of(candidate, finished)
    step = step_for(candidate, rolled)
    assert sorted(step.cold) == sorted(p["metadata"]["name"] for p in finished)


def test_a_warming_pod_that_fails_lets_the_rollout_go_on_and_says_why() -> None:
    serving, candidate = plan_on(OLD), plan_on(DIGEST)
    pods = step_for(candidate, world_of(serving)).warm
    failed = [ended(pods[0], "Failed", "DeadlineExceeded"), ended(pods[1], "Succeeded")]
    found = step_for(candidate, world_of(serving, failed), {"rollout": {"phase": "Warming"}})
    assert found.roll_main and found.status is None
    # A pull the kubelet refuses (backing off) ends warming on its node as well.
    backing_off = trim_warm_pod(
        {
            **pods[0],
            "status": {
                "phase": "Pending",
                "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}],
            },
        }
    )
    found = step_for(
        candidate, world_of(serving, [backing_off, failed[1]]), {"rollout": {"phase": "Warming"}}
    )
    assert found.roll_main


def test_warming_never_holds_a_rollout_past_its_deadline_nor_after_a_refusal() -> None:
    """A node whose pull hangs, or a warming pod the API server refuses (a quota, a policy):
    the rollout waits a bounded time, then goes on without those nodes; a refusal ends the
    wait at the next pass, and the Model is not made FAILED for it."""
    serving, candidate = plan_on(OLD), plan_on(DIGEST)
    first = step_for(candidate, world_of(serving))
    assert first.status is not None and first.recheck_after is not None
    assert first.recheck_after <= 60
    hanging = [trim_warm_pod({**pod, "status": {"phase": "Pending"}}) for pod in first.warm]
    long_ago = {**first.status, "warmingSince": "2020-01-01T00:00:00Z"}
    late = step_for(candidate, world_of(serving, hanging), {"rollout": long_ago})
    assert late.roll_main and late.status is None, "a hanging pull held the rollout"
    # Within the deadline, the same pods hold it, and the wait's start is kept.
    held = step_for(candidate, world_of(serving, hanging), {"rollout": first.status})
    assert not held.roll_main and held.status is not None
    assert held.status["warmingSince"] == first.status["warmingSince"]
    refused = {**first.status, "warmingRefused": "exceeded quota: pods"}
    step = step_for(candidate, world_of(serving), {"rollout": refused})
    assert step.roll_main and step.warm == [], "a refused warming pod was asked for again"


def test_ended_workers_are_no_node_to_warm_and_only_the_models_pods_are_deleted() -> None:
    serving = plan_on(OLD)
    world = world_of(serving)
    evicted = trim_pod(
        {
            "metadata": {"name": "iris-c"},
            "spec": {"nodeName": "node-c"},
            "status": {"phase": "Failed"},
        }
    )
    world.pods.append(evicted)
    step = step_for(plan_on(DIGEST), world)
    assert sorted(p["spec"]["nodeName"] for p in step.warm) == ["node-a", "node-b"]
    stranger = trim_warm_pod(
        {
            "metadata": {
                "name": "someone-elses",
                "labels": {labels.WARMS_LABEL: "iris-from-weights"},
                "annotations": {labels.WEIGHTS_ANNOTATION: "other@" + OLD},
            }
        }
    )
    assert step_for(serving, world_of(serving, [stranger])).cold == []


def test_nothing_waits_without_new_weights_nor_anything_serving() -> None:
    serving = plan_on(OLD)
    # The same weights, another pod template (a changed env): no pull to wait for.
    changed = plan_on(OLD, spec__env={"WORKERS": "2"})
    assert desired_revision(changed) != desired_revision(serving)
    assert step_for(changed, world_of(serving)).roll_main
    # A new Model: its first workers pull as they start.
    alone = ModelWorld(model=MODEL, template=None)
    assert step_for(plan_on(DIGEST), alone).roll_main
    # Scaled to zero: no node to warm.
    idle = world_of(serving)
    idle.pods = []
    assert step_for(plan_on(DIGEST), idle).roll_main
    # No worker ready (crash-looping, all starting): nothing serves to protect.
    starting = world_of(serving)
    starting.pods = [
        trim_pod({"metadata": {"name": "iris-a"}, "spec": {"nodeName": "node-a"}, "status": {}})
    ]
    assert step_for(plan_on(DIGEST), starting).roll_main
    # No image to warm with: the rollout goes as before.
    assert step_for(plan_on(DIGEST), world_of(serving), weights_verifier_image=None).roll_main


def test_warming_pods_left_from_another_revision_are_deleted() -> None:
    serving = plan_on(OLD)
    stale = warming.warm_pod(
        MODEL,
        deployment=plan_on("sha256:" + "9" * 64).children.deployment,  # type: ignore[union-attr]
        node="node-a",
        image=VERIFIER,
    )
    step = step_for(plan_on(DIGEST), world_of(serving, [trim_warm_pod(stale)]))
    assert step.cold == [stale["metadata"]["name"]]
    assert len(step.warm) == 2


def warming_of(warmed: list[str], nodes: tuple[str, ...] = ("node-a", "node-b")) -> Any:
    return rollout.Warming(reference="r@" + DIGEST, nodes=nodes, warmed=warmed)


def test_a_canary_of_new_weights_starts_once_they_are_on_the_serving_nodes_and_prefers_them() -> (
    None
):
    held = decide(warming=warming_of(["node-a"]))
    assert not held.roll_main and held.canary is None and held.phase == "Warming"
    started = decide(warming=warming_of(["node-a", "node-b"]), previous=held.status)
    assert started.phase == "Canary" and started.canary is not None
    assert started.status is not None and started.status["warmedOn"] == ["node-a", "node-b"]
    assert "its weights are on 2 nodes already" in started.status["message"]
    affinity = started.canary["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    # A node field selector takes one value: one term a node.
    assert [
        term["preference"]["matchFields"]
        for term in affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    ] == [
        [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}],
        [{"key": "metadata.name", "operator": "In", "values": ["node-b"]}],
    ]
    # The next passes keep the canary's pods as they are, whatever warming reads now (its
    # pods are gone): the canary is not rolled by a change of the nodes it prefers.
    later = decide(warming=warming_of([]), previous=started.status, canary={"metadata": {}})
    assert later.canary == started.canary and later.status is not None
    assert later.status["warmedOn"] == ["node-a", "node-b"]


def test_the_real_api_server_takes_a_canary_that_prefers_several_warmed_nodes(
    session: Session,
) -> None:
    started = decide(warming=warming_of(["node-a", "node-b", "node-c"]))
    assert started.canary is not None
    canary = {**started.canary, "metadata": {**started.canary["metadata"], "namespace": "default"}}
    session.api.apply(canary, dry_run=True)


def test_a_new_candidate_replaces_the_last_ones_canary_before_warming() -> None:
    """A canary of 1.1.0 under analysis, and 1.2.0 arrives with new weights: 1.1.0's canary goes
    at once, not after 1.2.0's warming (nothing would judge it meanwhile)."""
    analysing = {
        "phase": "Analysing",
        "candidateRevision": "older",
        "candidate": "1.1.0",
        "warmedOn": ["node-z"],
    }
    step = decide(warming=warming_of([]), previous=analysing, canary={"metadata": {}})
    assert step.phase == "Warming" and step.delete_canary and step.canary is None
    # Its canary, once it starts, prefers this rollout's nodes, never the last one's.
    given_up = rollout.Warming(
        reference="r@" + DIGEST, nodes=("node-a",), failed={"node-a": "ImagePullBackOff"}
    )
    started = decide(warming=given_up, previous=analysing)
    assert started.phase == "Canary"
    assert started.status is not None and started.status["warmedOn"] == []
    assert started.canary is not None
    assert "affinity" not in started.canary["spec"]["template"]["spec"]


def test_one_rollouts_warming_record_is_cleared_for_the_next() -> None:
    """status.rollout is merged key by key: a refusal (or a start time) of one candidate's
    warming is sent as null by every later status, never read as the next candidate's."""
    refused = {
        **under_way("Warming"),
        "warmingSince": "2026-01-01T00:00:00Z",
        "warmingRefused": "exceeded quota: pods",
    }
    given_up = rollout.Warming(reference="r", nodes=("node-a",), failed={"node-a": "refused"})
    started = decide(warming=given_up, previous=refused)
    assert started.phase == "Canary" and started.status is not None
    assert "warmingRefused" in started.status and started.status["warmingRefused"] is None
    assert "warmingSince" in started.status and started.status["warmingSince"] is None
    server = {k: v for k, v in {**refused, **started.status}.items() if v is not None}
    other = rollout.Revisions("old", "other", "1.0.0", "1.2.0")
    warming = warming_of([])
    warming.bounded(
        {**server, "phase": "Warming", "candidateRevision": "other"}, "other", NOW_SECONDS
    )
    assert not warming.complete, "a refusal of another rollout's warming ended this one's"
    step = decide(revisions=other, warming=warming, previous=server)
    assert step.phase == "Warming" and step.status is not None
    assert step.status["warmingRefused"] is None


def test_a_candidate_withdrawn_while_warming_leaves_no_rollout_on_record() -> None:
    held = decide(warming=warming_of([]))
    same = rollout.Revisions("old", "old", "", "1.0.0 (sha256:aa)")
    step = decide(revisions=same, previous=held.status)
    assert step.roll_main and step.status is None


def test_the_rollout_condition_says_the_model_is_warming() -> None:
    held = decide(warming=warming_of(["node-a"]))
    found = rollout.condition(held.status)
    assert found[reasons.ROLLOUT].reason == reasons.WARMING
    assert "on 1 of 2 nodes" in found[reasons.ROLLOUT].message
    assert found[reasons.RECONCILING].ok


def scaled(minimum: int, maximum: int, **changes: Any) -> Plan:
    """The example Model's plan on the serving weights, its minimum of workers raised."""
    return plan_on(
        OLD, spec__scaling={"minWorkers": minimum, "maxWorkers": maximum, "perWorker": 8}, **changes
    )


def running(plan: Plan, replicas: int, warm_pods: list[dict[str, Any]] | None = None) -> ModelWorld:
    """`plan`'s Deployment as it runs, `replicas` workers of it (two of them ready)."""
    world = world_of(plan, warm_pods)
    deployment = world.children["Deployment"]
    world.children["Deployment"] = {
        **deployment,
        "spec": {**deployment["spec"], "replicas": replicas},
    }
    return world


def placed(pod: dict[str, Any], node: str, phase: str) -> dict[str, Any]:
    """A scale-up's warming pod as the informer keeps it once the scheduler placed it."""
    return trim_warm_pod(
        {**pod, "spec": {**pod["spec"], "nodeName": node}, "status": {"phase": phase}}
    )


def test_raising_min_workers_pulls_the_weights_where_the_new_workers_will_run_first() -> None:
    """minWorkers 2 → 4 on a serving Model: the Deployment stays at 2 while one pod per new
    worker, placed by the scheduler as that worker would be, pulls the weights; it grows to 4
    once each ended — warmed, or with no room (its workers then wait for room themselves)."""
    plan = scaled(
        4,
        4,
        spec__resources={"cpus": 2, "memory": "3Gi", "gpus": 1, "gpuType": "nvidia-ampere-a10"},
    )
    assert plan.children is not None
    step = step_for(plan, running(plan, 2))
    assert step.hold == 2 and step.roll_main
    assert step.status is not None and step.status["phase"] == "Warming"
    assert step.status["scaleUpTo"] == 4
    assert "0 of 2 new workers' nodes hold them" in step.status["message"]
    assert step.event is not None and "from 2 to 4" in step.event[2]
    (deployment,) = [
        m for m in to_apply(plan.children.manifests, False, step) if m["kind"] == "Deployment"
    ]
    assert deployment["spec"]["replicas"] == 2, "the new workers started before their weights"
    assert len(step.warm) == 2 and len({pod["metadata"]["name"] for pod in step.warm}) == 2
    workers = plan.children.deployment["spec"]["template"]["spec"]
    for pod in step.warm:
        spec = pod["spec"]
        # Placed by the scheduler as the worker: where one fits, holding its room meanwhile.
        assert "nodeName" not in spec
        assert spec["nodeSelector"] == workers["nodeSelector"]
        assert spec["tolerations"] == workers["tolerations"]
        assert spec["containers"][0]["resources"] == workers["containers"][0]["resources"]
        assert "nvidia.com/gpu" in spec["containers"][0]["resources"]["requests"]
        assert spec["volumes"] == [v for v in workers["volumes"] if v["name"] == "weights"]
        spread = spec["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert spread[-1]["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
            labels.WARMS_LABEL: "iris-from-weights",
            warming.WARMS_FOR_LABEL: warming.SCALE_UP,
        }
        assert labels.MODEL_LABEL not in pod["metadata"]["labels"]

    # Asked again: the same pods, none made twice; one warmed, one still pulling.
    again = step_for(plan, running(plan, 2), {"rollout": step.status})
    assert [p["metadata"]["name"] for p in again.warm] == [p["metadata"]["name"] for p in step.warm]
    done, pulling = (
        placed(step.warm[0], "node-c", "Succeeded"),
        placed(step.warm[1], "node-d", "Pending"),
    )
    held = step_for(plan, running(plan, 2, [done, pulling]), {"rollout": step.status})
    assert held.hold == 2 and held.warm == [] and held.event is None
    assert held.status is not None
    assert (
        "1 of 2 new workers' nodes hold them (worker 4 on node-d: Pending)"
        in held.status["message"]
    )

    # The other finds no room: no room for it is no room for the worker; the scale-up goes on.
    full = trim_warm_pod(
        {
            **step.warm[1],
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ],
            },
        }
    )
    # While another still pulls, it stays (deleted, the next pass would only make it again),
    # and the scale-up stays held.
    still = placed(step.warm[0], "node-c", "Pending")
    waiting_too = step_for(plan, running(plan, 2, [still, full]), {"rollout": held.status})
    assert waiting_too.hold == 2 and waiting_too.cold == [] and waiting_too.warm == []
    grown = step_for(plan, running(plan, 2, [done, full]), {"rollout": held.status})
    assert grown.hold is None and grown.status is None
    (deployment,) = [
        m for m in to_apply(plan.children.manifests, False, grown) if m["kind"] == "Deployment"
    ]
    assert deployment["spec"]["replicas"] == 4
    # The one with no room goes at once (it would compete with the workers for room, or have
    # a cluster autoscaler add a node for itself); the warmed one stays until the Deployment
    # grew (a refused apply must not warm again), then goes.
    assert grown.cold == [full["metadata"]["name"]]
    # Room being made for it by preemption is not "no room": still held.
    nominated = {**full, "status": {**full["status"], "nominatedNodeName": "node-d"}}
    preempting = step_for(plan, running(plan, 2, [done, nominated]), {"rollout": held.status})
    assert preempting.hold == 2 and preempting.cold == []
    after = step_for(plan, running(plan, 4, [done, full]))
    assert sorted(after.cold) == sorted(p["metadata"]["name"] for p in step.warm)


def test_an_autoscalers_raised_minimum_is_held_while_the_weights_are_warmed() -> None:
    plan = scaled(3, 6)
    assert plan.children is not None
    step = step_for(plan, running(plan, 1))
    assert step.hold == 1 and len(step.warm) == 2
    applied = {m["kind"]: m for m in to_apply(plan.children.manifests, False, step)}
    assert applied["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 1
    assert applied["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 6, "load scaling held"
    assert "replicas" not in applied["Deployment"]["spec"]
    # The autoscaler already runs more than the new minimum: nothing to warm for.
    assert step_for(plan, running(plan, 3)).hold is None
    # Released: the autoscaler's minimum is 3 and it has yet to act. Not held again meanwhile
    # (the minimum would flip back to 1 at every pass until the autoscaler's next sync).
    released = running(plan, 1)
    hpa = plan.children.manifests[
        [m["kind"] for m in plan.children.manifests].index("HorizontalPodAutoscaler")
    ]
    released.children["HorizontalPodAutoscaler"] = hpa
    assert hpa["spec"]["minReplicas"] == 3
    again = step_for(plan, released, {"rollout": step.status})
    assert again.hold is None and again.warm == []
    # Raised again (3 → 5) before the autoscaler acted on 3: warmed for workers 4 and 5, and
    # held at 3, never back at the Deployment's 1 (which would take the released scale-up back).
    higher = scaled(5, 6)
    assert higher.children is not None
    raised = step_for(higher, released, {"rollout": step.status})
    assert raised.hold == 3 and len(raised.warm) == 2
    assert raised.status is not None and raised.status["scaleUpTo"] == 5
    applied = {m["kind"]: m for m in to_apply(higher.children.manifests, False, raised)}
    assert applied["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3


def test_a_scale_up_waits_for_warming_a_bounded_time_and_only_when_something_serves() -> None:
    plan = scaled(3, 3)
    first = step_for(plan, running(plan, 1))
    assert first.status is not None and first.hold == 1
    hanging = [trim_warm_pod({**pod, "status": {"phase": "Pending"}}) for pod in first.warm]
    long_ago = {**first.status, "warmingSince": "2020-01-01T00:00:00Z"}
    assert step_for(plan, running(plan, 1, hanging), {"rollout": long_ago}).hold is None
    refused = {**first.status, "warmingRefused": "exceeded quota: pods"}
    assert step_for(plan, running(plan, 1), {"rollout": refused}).hold is None
    # Past the deadline, the status names only the workers whose warming had not ended.
    warmed = [placed(first.warm[0], "node-c", "Succeeded"), hanging[1]]
    late = step_for(plan, running(plan, 1, warmed), {"rollout": long_ago})
    assert late.hold is None and late.status is None
    found = scale_up_warming(
        MODEL,
        plan.workload,  # type: ignore[arg-type]
        desired=plan.children.deployment,  # type: ignore[union-attr]
        desired_hash=desired_revision(plan),
        world=running(plan, 1, warmed),
        main_pods=running(plan, 1).pods,
        config=WARMING_CONFIG,
        now=NOW_SECONDS,
    )
    assert found is not None
    found.bounded(long_ago, desired_revision(plan), NOW_SECONDS)
    assert found.warmed == ["node-c"] and list(found.failed) == ["worker 3"], found.failed
    # A wait whose record never lands (every status write refused, or a CRD that prunes it)
    # is still bounded: by its pods' age.
    old_pods = [
        trim_warm_pod(
            {**pod, "metadata": {**pod["metadata"], "creationTimestamp": "2020-01-01T00:00:00Z"}}
        )
        for pod in first.warm
    ]
    assert step_for(plan, running(plan, 1, old_pods)).hold is None
    # A rollback's record stands: the scale-up goes unwarmed rather than overwrite it.
    rolled_back = {"phase": "RolledBack", "candidateRevision": "other", "reason": "SchemaMismatch"}
    assert step_for(plan, running(plan, 1), {"rollout": rolled_back}).hold is None
    # Nor a promotion's under way: its record is how it goes on to Promoted.
    promoting = {"phase": "Promoting", "candidateRevision": desired_revision(plan)}
    assert step_for(plan, running(plan, 1), {"rollout": promoting}).hold is None
    # A finished one's is replaced.
    promoted = {"phase": "Promoted", "candidateRevision": desired_revision(plan)}
    assert step_for(plan, running(plan, 1), {"rollout": promoted}).hold == 1
    # Another target is another wait: the clock starts again.
    other = {**long_ago, "scaleUpTo": 5}
    assert step_for(plan, running(plan, 1, hanging), {"rollout": other}).hold == 1
    # No worker ready: the new workers are needed at once.
    starting = running(plan, 1)
    starting.pods = [
        trim_pod({"metadata": {"name": "iris-a"}, "spec": {"nodeName": "node-a"}, "status": {}})
    ]
    assert step_for(plan, starting).hold is None
    # No weights to pull, or no image to pull them with.
    assert step_for(plan, running(plan, 1), weights_verifier_image=None).hold is None
    # A rollout under way warms its own; the scale-up is not held behind it.
    changing = running(plan_on(OLD), 1)
    rolling = step_for(plan_on(DIGEST, spec__scaling={"minWorkers": 3, "maxWorkers": 3}), changing)
    assert rolling.hold is None and rolling.status is not None
    assert rolling.status["scaleUpTo"] is None


def test_the_real_api_server_takes_a_scale_up_warming_pod(session: Session) -> None:
    plan = scaled(
        3,
        3,
        spec__resources={"cpus": 2, "memory": "3Gi", "gpus": 1, "gpuType": "nvidia-ampere-a10"},
    )
    (pod, _) = step_for(plan, running(plan, 1)).warm
    pod = {**pod, "metadata": {**pod["metadata"], "namespace": "default"}}
    pod["metadata"]["ownerReferences"] = []
    session.api.apply(pod, dry_run=True)


class DeletingKube:
    """Stands in for the API client where a pass has no plan: what it deletes is the point."""

    def __init__(self) -> None:
        self.deleted: list[tuple[str, str]] = []

    async def delete(self, _api: str, kind: str, _namespace: Any, name: str) -> bool:
        self.deleted.append((kind, name))
        return True

    async def patch_status(self, *_: Any, **__: Any) -> dict[str, Any]:
        return {}

    async def post_event(self, *_: Any, **__: Any) -> None:
        return None

    async def get(self, *_: Any, **__: Any) -> None:
        return None


async def test_a_model_whose_plan_fails_keeps_no_warming_pod() -> None:
    """A template made invalid mid-warming: the scale-up's pods the scheduler never placed go,
    or they would wait, holding their room, for as long as the template stays broken. One
    placed and pulling ends by its own deadline, and its pull is not thrown away."""
    plan = scaled(4, 4)
    first = step_for(plan, running(plan, 1))
    pulling = placed(first.warm[2], "node-c", "Pending")
    world = running(plan, 1, [trim_warm_pod(pod) for pod in first.warm[:2]] + [pulling])
    world.model = {**MODEL, "spec": typed("Model", "iris-from-weights").model_dump(by_alias=True)}
    world.template = {"apiVersion": "modelyard.dev/v1alpha1", "kind": "ModelTemplate", "spec": 1}
    kube = DeletingKube()
    await reconcile_model(world, kube, WARMING_CONFIG)  # type: ignore[arg-type]
    assert sorted(kube.deleted) == sorted(("Pod", p["metadata"]["name"]) for p in first.warm[:2])
