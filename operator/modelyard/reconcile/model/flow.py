"""The pass over one Model, top to bottom: read → plan → decide the rollout's step → apply →
observe → status → publish.

Level-based and idempotent: every call computes the whole desired state from what the indices
hold, so it is safe to run twice, after a restart, or triggered by any related event. Nothing
is written when nothing changed — neither children (see `builders.drift`) nor status.

When the Model's inputs become invalid (a typo in a parameter, a template made invalid), the
children it already has are left running: the status says what is wrong, and nothing that was
serving is taken away by a bad edit.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modelyard.api.v1alpha1 import (
    Model,
    ModelTemplate,
    ModelVersion,
    Registry,
)
from modelyard.builders import drift
from modelyard.builders import workload as wl
from modelyard.builders.plan import Plan, plan_model
from modelyard.config import OperatorConfig
from modelyard.kube import Kube
from modelyard.reconcile import rollout
from modelyard.reconcile.common import (
    ReconcileError,
    describe,
    parse_all,
    parse_cached,
)
from modelyard.reconcile.conformance import (
    Prober,
)
from modelyard.reconcile.model.apply import (
    apply_children,
    drop_warming,
    set_serving_replicas,
    withdraw_revoked,
)
from modelyard.reconcile.model.canary import rollout_step
from modelyard.reconcile.model.capacity import plan_dip, serving_count
from modelyard.reconcile.model.external import reconcile_external
from modelyard.reconcile.model.publish import announce_rollout, publish, write_broken
from modelyard.reconcile.model.status import assemble, record
from modelyard.reconcile.model.world import (
    KEDA_GROUP_VERSION,
    KEDA_PLURAL,
    ModelWorld,
    Outcome,
    desired_revision,
    read_model,
)
from modelyard.status import conditions, reasons
from modelyard.status.model import observe

Manifest = dict[str, Any]


async def reconcile_model(
    world: ModelWorld,
    kube: Kube,
    config: OperatorConfig,
    first_turn: bool = False,
    persistent: bool = False,
    *,
    prober: Prober | None = None,
) -> Outcome:
    """Bring one Model's children and status in line with its spec; raises ApiError to retry.

    `first_turn` is the short first pass of a new Model: when it has a Deployment to create,
    only that is applied (what its users wait for) and the outcome is `unfinished`; the
    Service, autoscaler and status follow in the next pass.

    A child the server refuses becomes the status (`ChildrenApplied=False` and Ready with the
    cause) and `outcome.refused`, which the runner retries with backoff. A server error (5xx)
    is retried quietly first and only reported once it persists (`persistent`): a passing
    blip must not flip a serving Model to FAILED.
    """
    # Read: the Model as the CRD's rules and the API types read it.
    body = world.model
    previous: Manifest = dict(body.get("status") or {})
    plan: Plan | None = None
    model, blocking = read_model(body)
    if model is not None and model.spec.external is not None:
        await drop_warming(world, kube)
        return await reconcile_external(
            world, model, kube, prober, previous=previous, persistent=persistent
        )
    # Plan: what the Model should become; workers reading a Secret that withdrew consent go.
    outcome = Outcome(state=None, reason="")
    deployment = world.children.get("Deployment")
    if model is not None:
        plan, blocking = await _planned(world, model, config, kube)
        withdrawn = await withdraw_revoked(world, kube, outcome)
        if withdrawn is not None:
            blocking, deployment = withdrawn, world.children.get("Deployment")
    workload = plan.workload if plan else None
    desired_hash = desired_revision(plan)
    main_pods = [pod for pod in world.pods if not rollout.is_canary_pod(pod)]
    first_turn = first_turn and "Deployment" not in world.children
    # Decide the rollout's step (a canary, a dip in capacity) from the stores and the last status.
    step: rollout.Step | None = None
    if model is not None and plan is not None and plan.children is not None and not first_turn:
        assert workload is not None
        step = rollout_step(
            model,
            workload,
            desired=plan.children.deployment,
            desired_hash=desired_hash,
            world=world,
            main_pods=main_pods,
            prober=prober,
            config=config,
            previous=previous,
        )
        plan_dip(step, world, workload, dict(previous.get("rollout") or {}))
    elif world.warm_pods:
        outcome.deleted += await drop_warming(world, kube)
    # Apply what differs; a worker given back for a dip is given back now.
    if plan is not None and plan.children is not None:
        deployment = await apply_children(
            plan, world, kube, outcome, first_turn=first_turn, persistent=persistent, step=step
        )
        if first_turn and outcome.refused is None:
            outcome.unfinished = True
            return outcome
    resize, live_replicas = serving_count(step, deployment)
    if resize is not None and resize > live_replicas:
        # A worker given back: nothing to record first.
        deployment = await set_serving_replicas(world, resize, kube)
        outcome.written.append(deployment)
    # Observe the revision that serves.
    serving_hash = desired_hash
    if step is not None and not step.roll_main:
        # The current revision serves on: the Model is judged on it.
        serving_hash = drift.template_hash(deployment) or desired_hash
    min_workers = workload.scaling.min_workers if workload else 1
    if step is not None and step.hold is not None:
        # A scale-up held back for warming: what runs serves as before, and is judged so.
        min_workers = min(min_workers, step.hold)
    observation = observe(
        deployment,
        main_pods,
        serving_hash,
        min_workers,
        workload.template.startup_timeout_seconds if workload else None,
    )
    if model is None:
        return await write_broken(body, previous, blocking, kube, outcome)
    # Status, then publish it; a worker taken for a dip is taken only once status records it.
    status = assemble(
        model,
        world,
        plan=plan,
        blocking=blocking,
        observation=observation,
        previous=previous,
        refused=outcome.refused,
        step=step,
        deployment=deployment,
        main_pods=main_pods,
        serving_hash=serving_hash,
        prober=prober,
        config=config,
    )
    record(outcome, status)
    if step is not None:
        outcome.recheck_after = step.recheck_after
    outcome = await publish(body, previous, status, kube, outcome)
    if resize is not None and resize < live_replicas:
        # A worker taken for a canary: only now that status records the count it came from.
        outcome.written.append(await set_serving_replicas(world, resize, kube))
    if step is not None:
        await announce_rollout(body, previous.get("rollout"), step, kube)
    return outcome


async def _plan(world: ModelWorld, model: Model, config: OperatorConfig, kube: Kube) -> Plan:
    template: ModelTemplate | None = None
    if world.template is not None:
        try:
            template = parse_cached(ModelTemplate, world.template)
        except ValidationError as error:
            raise ReconcileError(
                reasons.TEMPLATE_NOT_READY,
                f"ModelTemplate {model.spec.template} is invalid: {describe(error)}",
            ) from None
    registries = {r.metadata.name: r for r in parse_all(Registry, world.registries)}
    versions = parse_all(ModelVersion, world.versions)
    permitted = world.permitted_secrets
    plan = plan_model(model, template, registries, versions, config, permitted_secrets=permitted)
    needs_keda = (
        plan.workload is not None and plan.workload.scaling.autoscaler is wl.AutoscalerKind.KEDA
    )
    if needs_keda and not await kube.serves(KEDA_GROUP_VERSION, KEDA_PLURAL):
        plan = plan_model(
            model,
            template,
            registries,
            versions,
            config,
            keda_available=False,
            permitted_secrets=permitted,
        )
    return plan


async def _planned(
    world: ModelWorld, model: Model, config: OperatorConfig, kube: Kube
) -> tuple[Plan | None, conditions.Check | None]:
    """The plan, and what blocks it (None: nothing)."""
    try:
        plan = await _plan(world, model, config, kube)
    except ReconcileError as error:
        return None, conditions.failed(error.reason, error.message)
    return plan, plan.blocking
