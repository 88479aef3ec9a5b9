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
from modelyard.reconcile.model.canary import rollout_step
from modelyard.reconcile.model.world import ModelWorld, desired_revision
from modelyard.status import reasons
from test_builders import CONFIG, registries, typed
from test_rollout import decide
from test_weights import DIGEST, ready

VERIFIER = "registry.example/modelyard@sha256:" + "7" * 64
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

    # Both done: the workers roll, the warming pods go, no rollout is left on record.
    finished = [done, ended(by_node["node-b"], "Succeeded")]
    step = step_for(candidate, world_of(serving, finished), {"rollout": step.status})
    assert step.roll_main and step.status is None
    assert sorted(step.cold) == sorted(p["metadata"]["name"] for p in step.warm or finished)


def test_a_warming_pod_that_fails_lets_the_rollout_go_on_and_says_why() -> None:
    serving, candidate = plan_on(OLD), plan_on(DIGEST)
    pods = step_for(candidate, world_of(serving)).warm
    failed = [ended(pods[0], "Failed", "DeadlineExceeded"), ended(pods[1], "Succeeded")]
    found = step_for(candidate, world_of(serving, failed), {"rollout": {"phase": "Warming"}})
    assert found.roll_main and found.status is None


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
    (preferred,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["preference"]["matchFields"] == [
        {"key": "metadata.name", "operator": "In", "values": ["node-a", "node-b"]}
    ]
    # The next passes keep the canary's pods as they are, whatever warming reads now (its
    # pods are gone): the canary is not rolled by a change of the nodes it prefers.
    later = decide(warming=warming_of([]), previous=started.status, canary={"metadata": {}})
    assert later.canary == started.canary and later.status is not None
    assert later.status["warmedOn"] == ["node-a", "node-b"]


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
