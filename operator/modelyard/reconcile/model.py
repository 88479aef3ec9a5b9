"""One Model, reconciled: read what the indices hold, plan, apply what differs, write status.

Level-based and idempotent: every call computes the whole desired state from scratch, so it is
safe to run twice, after a restart, or triggered by any related event. Nothing is written when
nothing changed — neither children (see `builders.drift`) nor status.

When the Model's inputs become invalid (a typo in a parameter, a template made invalid), the
children it already has are left running: the status says what is wrong, and nothing that was
serving is taken away by a bad edit.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modelyard.api.v1alpha1 import (
    API_VERSION,
    Model,
    ModelState,
    ModelTemplate,
    ModelVersion,
    Registry,
    RolloutPhase,
    RolloutStrategy,
    parse,
)
from modelyard.builders import drift, labels
from modelyard.builders import external as external_children
from modelyard.builders import workload as wl
from modelyard.builders.plan import Plan, plan_model
from modelyard.config import OperatorConfig
from modelyard.kube import ApiError, Kube
from modelyard.reconcile import consent, rollout
from modelyard.reconcile.common import (
    ReconcileError,
    describe,
    parse_all,
    parse_cached,
    status_changed,
)
from modelyard.reconcile.conformance import (
    Prober,
    external_target,
    of_template,
    pod_target,
    service_target,
)
from modelyard.registry.credentials import CONSENT_LABEL, CONSENT_VALUE
from modelyard.status import conditions, reasons
from modelyard.status.model import Observation, autoscaling, observe

logger = logging.getLogger(__name__)

Manifest = dict[str, Any]
COMPONENT = "modelyard"
KEDA_GROUP_VERSION, KEDA_PLURAL = "keda.sh/v1alpha1", "scaledobjects"
#: What an external Model must not have (it ran here before its spec changed).
WORKLOAD_KINDS = (
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    (KEDA_GROUP_VERSION, "ScaledObject"),
)


@dataclass
class ModelWorld:
    """What the operator's indices hold about one Model and everything it refers to."""

    model: Manifest
    template: Manifest | None
    registries: list[Manifest] = field(default_factory=list)
    versions: list[Manifest] = field(default_factory=list)
    #: Live children by kind ("Deployment", "Service", "HorizontalPodAutoscaler", "ScaledObject").
    children: dict[str, Manifest] = field(default_factory=dict)
    #: The Model's canary Deployment, while a canary rollout runs one.
    canary: Manifest | None = None
    pods: list[Manifest] = field(default_factory=list)
    #: The namespace's Secrets that consent to modelyard's use; None: not checked.
    permitted_secrets: frozenset[str] | None = None


@dataclass
class Outcome:
    state: str | None
    reason: str
    applied: int = 0
    deleted: int = 0
    status_written: bool = False
    #: Objects as our writes returned them (children applied, the Model after its status
    #: write), so the next pass can use them before the watch brings them back.
    written: list[Manifest] = field(default_factory=list)
    #: Only the Deployment was applied (`first_turn`): the rest needs another pass.
    unfinished: bool = False
    #: A child the API server refused (quota, policy, invalid, server error): the status says
    #: so, and the pass is retried with backoff until the cause is lifted.
    refused: conditions.Check | None = None
    #: The Autoscaling condition's (status, reason), for the metrics.
    autoscaling: tuple[str, str] | None = None
    #: Ask for another pass after this many seconds (a canary's analysis ends then).
    recheck_after: float | None = None
    #: Children deleted by name, (kind, (namespace, name)), so nothing kept resurrects them.
    deleted_names: list[tuple[str, tuple[str, str]]] = field(default_factory=list)


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


def refusal(manifest: Manifest, error: ApiError) -> conditions.Check:
    """Why the API server would not store a child, in the server's own words."""
    text = error.message.lower()
    if error.status == 403 and "exceeded quota" in text:
        reason = reasons.QUOTA_EXCEEDED
    elif error.status in (400, 403, 422) and (
        "denied" in text
        or (error.status == 403 and "is forbidden:" in text and "cannot " not in text)
    ):
        # An admission webhook (Kyverno, Gatekeeper) or a ValidatingAdmissionPolicy. (A LimitRange
        # acts on pods, and shows as PodsRejected.)
        reason = reasons.POLICY_DENIED
    elif error.status in (400, 422):
        reason = reasons.CHILD_INVALID
    else:
        reason = reasons.CHILD_REJECTED
    name = manifest["metadata"]["name"]
    return conditions.failed(
        reason,
        f"the API server refused {manifest['kind']} {name} ({error.status}): {error.message}",
    )


#: What a new Model's first turn applies (`first_turn`): its workers.
FIRST_TURN_KINDS = frozenset({"Deployment"})


async def _apply_children(
    plan: Plan,
    world: ModelWorld,
    kube: Kube,
    outcome: Outcome,
    *,
    first_turn: bool = False,
    persistent: bool = False,
    step: rollout.Step | None = None,
) -> Manifest | None:
    """Apply what differs, delete the autoscaler that must not exist; the live Deployment after.
    A canary rollout (`step`) may leave the Deployment as it runs and add or remove a canary.

    The children are applied at once rather than one after the other: a pass then takes one
    round trip, not three. It matters most for Services, which the API server creates one at a
    time (each takes a ClusterIP under its allocator's lock): hundreds of seconds a burst would
    otherwise wait, Model after Model."""
    assert plan.children is not None
    manifests = _to_apply(plan.children.manifests, first_turn, step)
    autoscaled = bool({"HorizontalPodAutoscaler", "ScaledObject"} & set(world.children))
    canary_name = labels.canary_name(world.model["metadata"]["name"])

    def live_of(manifest: Manifest) -> Manifest | None:
        if manifest["metadata"]["name"] == canary_name:
            return world.canary
        return world.children.get(manifest["kind"])

    async def apply(manifest: Manifest) -> Manifest | None:
        desired = drift.stamped(manifest)
        live = live_of(manifest)
        why = drift.why_apply(desired, live)
        if why is None:
            return None
        if why not in ("missing", "changed"):
            metadata = manifest["metadata"]
            logger.info(
                "%s %s/%s: %s was changed by hand; restoring it",
                manifest["kind"],
                metadata.get("namespace"),
                metadata["name"],
                why,
            )
        if (
            manifest["kind"] == "Deployment"
            and not autoscaled
            and live is world.children.get("Deployment")
        ):
            await _hand_replicas_over(desired, live, kube)
        return await kube.apply(desired)

    answers = await asyncio.gather(*(apply(m) for m in manifests), return_exceptions=True)
    deployment = world.children.get("Deployment")
    temporary: ApiError | None = None
    for manifest, answer in zip(manifests, answers, strict=True):
        if isinstance(answer, ApiError):
            if answer.temporary and not (persistent and answer.status >= 500):
                temporary = temporary or answer
            else:
                # Refused: the other children are still applied; the status will say why.
                outcome.refused = outcome.refused or refusal(manifest, answer)
        elif isinstance(answer, BaseException):
            raise answer
        elif answer is not None:
            outcome.applied += 1
            outcome.written.append(answer)
            if manifest["kind"] == "Deployment" and manifest["metadata"]["name"] != canary_name:
                deployment = answer
    if temporary is not None:
        raise temporary
    if first_turn:
        return deployment
    metadata = world.model["metadata"]
    namespace = metadata.get("namespace") or "default"
    if step is not None and step.delete_canary and world.canary is not None:
        if await kube.delete("apps/v1", "Deployment", namespace, canary_name):
            outcome.deleted += 1
        outcome.deleted_names.append(("Deployment", (namespace, canary_name)))
    for api_version, kind in plan.children.unwanted_autoscalers:
        if kind in world.children:
            metadata = world.model["metadata"]
            if await kube.delete(api_version, kind, metadata.get("namespace"), metadata["name"]):
                outcome.deleted += 1
    return deployment


def _to_apply(
    manifests: list[Manifest], first_turn: bool, step: rollout.Step | None
) -> list[Manifest]:
    """The children this pass applies: the first turn's, and a canary rollout's changes."""
    if first_turn:
        manifests = [m for m in manifests if m["kind"] in FIRST_TURN_KINDS]
    if step is not None and not step.roll_main:
        manifests = [m for m in manifests if m["kind"] != "Deployment"]
    if step is not None and step.canary is not None:
        manifests = [*manifests, step.canary]
    if step is not None and step.ceiling is not None:
        manifests = [_capped(m, step.ceiling) for m in manifests]
    return manifests


def _capped(manifest: Manifest, ceiling: int) -> Manifest:
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


#: The field manager that takes a serving worker away for a canary (allowCapacityDip), and
#: gives it back.
CAPACITY_DIP = "modelyard-capacity-dip"


def _plan_dip(
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
        step.replicas = dipped_from
        if step.phase == RolloutPhase.PROMOTING:
            step.delete_canary = world.canary is not None
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


async def _set_serving_replicas(world: ModelWorld, replicas: int, kube: Kube) -> Manifest:
    metadata = world.model["metadata"]
    return await kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": metadata["name"], "namespace": metadata.get("namespace")},
            "spec": {"replicas": replicas},
        },
        field_manager=CAPACITY_DIP,
    )


#: The field manager that holds a Deployment's replicas while an autoscaler takes them over.
REPLICAS_HANDOVER = "modelyard-replicas-handover"


async def _hand_replicas_over(desired: Manifest, live: Manifest | None, kube: Kube) -> None:
    """Keep the live replica count when the operator stops setting it (a fixed-size Model now
    has an autoscaler, which does not exist yet).

    A field the operator's apply no longer names is removed if the operator alone owned it,
    and a Deployment without replicas has one: the Model would drop to one worker until the
    autoscaler first acts. Applied once under another manager, the count stays owned by
    someone, and the autoscaler takes it from there."""
    if live is None or "replicas" in desired["spec"]:
        return
    replicas = (live.get("spec") or {}).get("replicas")
    if replicas is None:
        return
    metadata = desired["metadata"]
    await kube.apply(
        {
            "apiVersion": desired["apiVersion"],
            "kind": desired["kind"],
            "metadata": {"name": metadata["name"], "namespace": metadata.get("namespace")},
            "spec": {"replicas": replicas},
        },
        field_manager=REPLICAS_HANDOVER,
    )


def kstatus(
    ready: conditions.Check, state: ModelState, observation: Observation | None = None
) -> dict[str, conditions.Check]:
    """Reconciling and Stalled, as kstatus (Flux's health checks, cli-utils) reads them: a
    FAILED Model is Stalled, so a health check fails at once instead of waiting for its
    timeout; a Model on its way (deploying, probing, rolling out, scaling) is Reconciling.
    Each is present only while True: the conventions say so, and it keeps them out of the
    way of `kubectl describe` the rest of the time."""
    if state is ModelState.FAILED or (not ready.ok and ready.reason in reasons.STALLED_WAITING):
        return {reasons.STALLED: conditions.passed(ready.reason, ready.message)}
    stalled = observation.stalled if observation else None
    if stalled is not None:
        return {reasons.STALLED: conditions.passed(stalled.reason, stalled.message)}
    if state in (ModelState.DEPLOYING, ModelState.PENDING):
        return {reasons.RECONCILING: conditions.passed(ready.reason, ready.message)}
    if observation is not None and observation.progress is not None:
        return {reasons.RECONCILING: conditions.passed(reasons.PROGRESSING, observation.progress)}
    return {}


def model_status(
    model: Model,
    *,
    plan: Plan | None,
    blocking: conditions.Check | None,
    observation: Observation,
    previous: Manifest,
    workload: wl.Workload | None,
    refused: conditions.Check | None = None,
    autoscaler: Manifest | None = None,
    conformant: conditions.Check | None = None,
    rollout_status: Manifest | None = None,
) -> Manifest:
    checks: dict[str, conditions.Check] = dict(plan.checks) if plan else {}
    if reasons.AUTOSCALING in checks:
        checks[reasons.AUTOSCALING] = autoscaling(checks[reasons.AUTOSCALING], autoscaler)
    if plan is not None and plan.children is not None:
        checks[reasons.CHILDREN_APPLIED] = refused or conditions.passed(
            reasons.APPLIED, "the API server stored every child"
        )
    checks[reasons.AVAILABLE] = observation.available
    if conformant is not None:
        checks[reasons.CONFORMANT] = conformant
    if blocking is None and refused is not None:
        blocking = refused
    if blocking is not None:
        ready, state = (
            blocking,
            (ModelState.PENDING if blocking.reason in reasons.WAITING else ModelState.FAILED),
        )
    else:
        ready, state = observation.available, observation.state
        if state is ModelState.READY and conformant is not None and not conformant.ok:
            # Workers are up; whether the model answers correctly decides.
            if conformant.status == conditions.UNKNOWN:
                ready, state = (
                    conditions.failed(conformant.reason, conformant.message),
                    (ModelState.DEPLOYING),
                )
            else:
                ready, state = conformant, ModelState.FAILED
    checks.update(rollout.condition(rollout_status))
    checks.update(kstatus(ready, state, observation))
    checks[reasons.READY] = ready
    generation = model.metadata.generation
    status: Manifest = {
        "state": state.value,
        "conditions": conditions.merge(previous.get("conditions"), checks, generation),
        "observedGeneration": generation,
        "replicas": observation.replicas,
        "readyReplicas": observation.ready_replicas,
    }
    if rollout_status:
        status["rollout"] = rollout_status
    if workload is not None:
        status["image"] = workload.image
        status["endpoint"] = wl.endpoint(workload)
        if workload.version:
            status["resolvedVersion"] = workload.version
    else:
        # Keep reporting what still runs while the inputs are broken.
        for kept in ("image", "endpoint", "resolvedVersion"):
            if previous.get(kept):
                status[kept] = previous[kept]
    return status


def _conformance(
    workload: wl.Workload | None,
    observation: Observation,
    desired_hash: str,
    prober: Prober | None,
    config: OperatorConfig,
    *,
    service: Manifest | None,
    worker: Manifest | None = None,
) -> conditions.Check | None:
    """The Conformant condition of a Model whose template declares a probe (else None):
    asked through its Service, or of one `worker` on its own address."""
    if prober is None or workload is None or workload.template.probe is None:
        return None
    key = (workload.namespace or "default", workload.name)
    probe = workload.template.probe
    if observation.state is not ModelState.READY:
        prober.forget(key)
        return conditions.unknown(
            reasons.AWAITING_WORKERS, f"POST {probe.path} is sent once the workers are ready"
        )
    if worker is not None:
        target = pod_target(
            key[0],
            str((worker.get("status") or {}).get("podIP")),
            port=workload.template.port,
            model_type=workload.template.model_type.value,
            probe=probe,
            revision=desired_hash,
            config=config.probes,
        )
    else:
        target = service_target(
            *key,
            port=workload.template.port,
            model_type=workload.template.model_type.value,
            probe=probe,
            revision=desired_hash,
            config=config.probes,
            cluster_ip=str(((service or {}).get("spec") or {}).get("clusterIP") or ""),
        )
    verdict = prober.verdict(key, of_template(target, workload.template))
    if verdict is None or verdict.conformant is None:
        return conditions.unknown(
            reasons.PROBING, f"the workers are ready; waiting for the answer to POST {probe.path}"
        )
    return verdict.conformant


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
    body = world.model
    previous: Manifest = dict(body.get("status") or {})
    plan: Plan | None = None
    model, blocking = _read(body)
    if model is not None and model.spec.external is not None:
        return await _reconcile_external(
            world, model, kube, prober, previous=previous, persistent=persistent
        )
    outcome = Outcome(state=None, reason="")
    deployment = world.children.get("Deployment")
    if model is not None:
        plan, blocking = await _planned(world, model, config, kube)
        withdrawn = await _withdraw_revoked(world, kube, outcome)
        if withdrawn is not None:
            blocking, deployment = withdrawn, world.children.get("Deployment")
    workload = plan.workload if plan else None
    desired_hash = _desired_hash(plan)
    main_pods = [pod for pod in world.pods if not rollout.is_canary_pod(pod)]
    first_turn = first_turn and "Deployment" not in world.children
    step: rollout.Step | None = None
    if model is not None and plan is not None and plan.children is not None and not first_turn:
        assert workload is not None
        step = _rollout_step(
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
        _plan_dip(step, world, workload, dict(previous.get("rollout") or {}))
    if plan is not None and plan.children is not None:
        deployment = await _apply_children(
            plan, world, kube, outcome, first_turn=first_turn, persistent=persistent, step=step
        )
        if first_turn and outcome.refused is None:
            outcome.unfinished = True
            return outcome
    resize, live_replicas = _resize(step, deployment)
    if resize is not None and resize > live_replicas:
        # A worker given back: nothing to record first.
        deployment = await _set_serving_replicas(world, resize, kube)
        outcome.written.append(deployment)
    serving_hash = desired_hash
    if step is not None and not step.roll_main:
        # The current revision serves on: the Model is judged on it.
        serving_hash = drift.template_hash(deployment) or desired_hash
    min_workers = workload.scaling.min_workers if workload else 1
    observation = observe(
        deployment,
        main_pods,
        serving_hash,
        min_workers,
        workload.template.startup_timeout_seconds if workload else None,
    )
    if model is None:
        return await _write_broken(body, previous, blocking, kube, outcome)
    autoscaler = world.children.get("ScaledObject") or world.children.get("HorizontalPodAutoscaler")
    # While a canary's pods exist (a deleted canary's keep serving through their drain), the
    # Service's answer could be theirs: the serving workers are asked on their own addresses.
    sharing = (
        world.canary is not None
        or (step is not None and step.canary is not None)
        or any(rollout.is_canary_pod(pod) for pod in world.pods)
    )
    status = model_status(
        model,
        plan=plan,
        blocking=blocking,
        observation=observation,
        previous=previous,
        workload=workload,
        refused=outcome.refused,
        autoscaler=autoscaler,
        conformant=_conformance(
            workload,
            observation,
            serving_hash,
            prober,
            config,
            service=world.children.get("Service"),
            worker=_ready_pod(main_pods, serving_hash) if sharing else None,
        ),
        rollout_status=step.status if step is not None else previous.get("rollout"),
    )
    _what_serves(status, step, deployment, previous)
    _classes(
        status,
        prober.offered_classes(key_of(model)) if prober is not None else None,
        workload.template.classes if workload is not None else [],
    )
    _record(outcome, status)
    if step is not None:
        outcome.recheck_after = step.recheck_after
    outcome = await _publish(body, previous, status, kube, outcome)
    if resize is not None and resize < live_replicas:
        # A worker taken for a canary: only now that status records the count it came from.
        outcome.written.append(await _set_serving_replicas(world, resize, kube))
    if step is not None:
        await _announce_rollout(body, previous.get("rollout"), step, kube)
    return outcome


async def _withdraw_revoked(
    world: ModelWorld, kube: Kube, outcome: Outcome
) -> conditions.Check | None:
    """Workers that read a Secret which no longer consents go (`modelyard.reconcile.consent`),
    asked at every pass — a Model whose spec moved on from the Secret may still run workers
    that read it. Why (None: nothing went); what went is gone from `world` too."""
    if world.permitted_secrets is None:
        return None
    metadata = world.model["metadata"]
    namespace, name = metadata.get("namespace") or "default", metadata["name"]
    ours = frozenset(
        str(published)
        for registry in world.registries
        if (published := (registry.get("status") or {}).get("pullSecret"))
        == f"{(registry.get('metadata') or {}).get('name')}-pull"
    )
    workloads = [w for w in (world.children.get("Deployment"), world.canary) if w is not None]
    secrets = await consent.revoked(kube, namespace, workloads, world.permitted_secrets | ours)
    if not secrets:
        return None
    for workload in workloads:
        if not consent.referenced_secrets(workload) & set(secrets):
            continue  # reads none of them: it stays
        gone = workload["metadata"]["name"]
        if await kube.delete("apps/v1", "Deployment", namespace, gone):
            outcome.deleted += 1
        outcome.deleted_names.append(("Deployment", (namespace, gone)))
        if gone == name:
            world.children.pop("Deployment", None)
        else:
            world.canary = None
    named = ", ".join(secrets)
    logger.warning(
        "Model %s/%s: Secret %s no longer lets modelyard use it; the workers that read it "
        "were stopped",
        namespace,
        name,
        named,
    )
    return conditions.failed(
        reasons.SECRET_NOT_PERMITTED,
        f"the workers were stopped: they read Secret {named}, which no longer carries "
        f"{CONSENT_LABEL}={CONSENT_VALUE}; they come back once it does again, or once the "
        "Model no longer needs it",
    )


def _desired_hash(plan: Plan | None) -> str:
    """The pod-template hash of the revision the plan asks for ("" without one)."""
    if plan is None or plan.children is None:
        return ""
    annotations = plan.children.deployment["spec"]["template"]["metadata"]["annotations"]
    return str(annotations[labels.SPEC_HASH_ANNOTATION])


def _resize(step: rollout.Step | None, deployment: Manifest | None) -> tuple[int | None, int]:
    """The serving Deployment's count this pass sets for a capacity dip (None: none), and
    the count it has now."""
    live = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)
    if step is None or step.replicas is None or deployment is None:
        return None, live
    return step.replicas, live


def _classes(status: Manifest, offered: tuple[str, ...] | None, registered: list[str]) -> None:
    """The classes the server lists, in status, when the Model registered none."""
    if offered is not None and not registered:
        status["classes"] = list(offered)


def key_of(model: Model) -> tuple[str, str]:
    return (model.metadata.namespace or "default", model.metadata.name)


def _record(outcome: Outcome, status: Manifest) -> None:
    """What the runner's metrics take from a status: the state, Ready's and Autoscaling's."""
    outcome.state, outcome.reason = status["state"], status["conditions"][-1]["reason"]
    scaling = conditions.find(status["conditions"], reasons.AUTOSCALING)
    if scaling is not None:
        outcome.autoscaling = (str(scaling.get("status") == "True"), str(scaling.get("reason")))


def _read(body: Manifest) -> tuple[Model | None, conditions.Check | None]:
    """The Model, or why it cannot be read.

    The same reading as `modelyard render`, root rules included (a name that cannot be a
    Service name). The CRD schema makes most failures impossible; an older CRD cannot."""
    try:
        parsed = parse(body)
    except ValidationError as error:
        return None, conditions.failed(reasons.INVALID_SPEC, describe(error))
    except ValueError as error:
        return None, conditions.failed(reasons.INVALID_SPEC, str(error))
    assert isinstance(parsed, Model)
    return parsed, None


def _what_serves(
    status: Manifest, step: rollout.Step | None, deployment: Manifest | None, previous: Manifest
) -> None:
    """During a canary rollout, status names what the Deployment runs, not the revision
    waiting to."""
    if step is None or step.roll_main:
        return
    status["image"] = drift.pod_image(deployment) or status.get("image")
    if previous.get("resolvedVersion"):
        status["resolvedVersion"] = previous["resolvedVersion"]
    else:
        status.pop("resolvedVersion", None)


def _describe(version: str | None, image: str | None) -> str:
    """A revision in words: its version, and its image's digest (or tag) in short."""
    short = ""
    if image:
        short = image.rsplit("@", 1)[1][:19] if "@" in image else image.rsplit("/", 1)[-1]
    if version and short:
        return f"{version} ({short})"
    return version or short or "?"


def _ready_pod(pods: list[Manifest], revision: str) -> Manifest | None:
    """A ready worker of `revision` with an address, the same one while it lasts."""
    ready = [
        pod
        for pod in pods
        if ((pod.get("metadata") or {}).get("annotations") or {}).get(labels.SPEC_HASH_ANNOTATION)
        == revision
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and (pod.get("status") or {}).get("podIP")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )
    ]
    return min(ready, key=lambda pod: str(pod["metadata"].get("name")), default=None)


def _rollout_step(
    model: Model,
    workload: wl.Workload,
    *,
    desired: Manifest,
    desired_hash: str,
    world: ModelWorld,
    main_pods: list[Manifest],
    prober: Prober | None,
    config: OperatorConfig,
    previous: Manifest,
) -> rollout.Step:
    """Where a canary rollout stands, from the stores and the Model's last status."""
    rules = rollout.settings(workload.template, model.spec.rollout)
    if (
        rules.strategy is RolloutStrategy.ROLLING
        and world.canary is None
        and not previous.get("rollout")
    ):
        return rollout.Step()  # the common case, and nothing to read for it
    main = world.children.get("Deployment")
    live_hash = drift.template_hash(main)
    startup = workload.template.startup_timeout_seconds
    key = (model.metadata.namespace or "default", model.metadata.name)
    main_serving = (
        observe(main, main_pods, live_hash or desired_hash, workload.scaling.min_workers, startup)
        if main is not None
        else None
    )
    canary_pods = [
        pod
        for pod in world.pods
        if rollout.is_canary_pod(pod)
        and ((pod.get("metadata") or {}).get("annotations") or {}).get(labels.SPEC_HASH_ANNOTATION)
        == desired_hash
    ]
    canary_observation = (
        observe(world.canary, canary_pods, desired_hash, rules.canary_workers, startup)
        if world.canary is not None
        else None
    )
    verdict = None
    if (
        prober is not None
        and workload.template.probe is not None
        and canary_observation is not None
        and canary_observation.state is ModelState.READY
    ):
        verdict = _canary_verdict(
            key, workload, pods=canary_pods, revision=desired_hash, prober=prober, config=config
        )
    elif prober is not None:
        prober.forget_canary(key)
    changing = live_hash is not None and live_hash != desired_hash
    revisions = rollout.Revisions(
        current_hash=live_hash,
        candidate_hash=desired_hash,
        current=_describe(previous.get("resolvedVersion"), drift.pod_image(main))
        if changing
        else "",
        candidate=_describe(workload.version, workload.image),
    )
    return rollout.decide(
        rules,
        revisions,
        desired=desired,
        main=main,
        canary=world.canary,
        main_serving=main_serving,
        canary_observation=canary_observation,
        canary_verdict=verdict,
        has_probe=workload.template.probe is not None,
        previous=previous.get("rollout"),
        generation=model.metadata.generation,
    )


def _canary_verdict(
    key: tuple[str, str],
    workload: wl.Workload,
    *,
    pods: list[Manifest],
    revision: str,
    prober: Prober,
    config: OperatorConfig,
) -> conditions.Check | None:
    """The probe's verdict on every ready canary worker, each asked on its own address: the
    first that fails, else a pass once all answered (None until then)."""
    probe = workload.template.probe
    assert probe is not None
    asked: set[tuple[str, ...]] = set()
    found: list[conditions.Check | None] = []
    for pod in pods:
        address = (pod.get("status") or {}).get("podIP")
        name = str((pod.get("metadata") or {}).get("name"))
        if not address:
            continue
        probe_key = (*key, name)
        asked.add(probe_key)
        target = pod_target(
            key[0],
            str(address),
            port=workload.template.port,
            model_type=workload.template.model_type.value,
            probe=probe,
            revision=revision,
            config=config.probes,
        )
        verdict = prober.verdict(probe_key, of_template(target, workload.template), model=key)
        found.append(None if verdict is None else verdict.conformant or verdict.available)
    prober.forget_canary(key, keep=frozenset(asked))
    failing = [check for check in found if check is not None and not check.ok]
    if failing:
        return failing[0]
    if not found or any(check is None for check in found):
        return None
    return conditions.passed(reasons.CONFORMANT, f"{len(found)} canary workers answer correctly")


async def _announce_rollout(
    body: Manifest, before: Manifest | None, step: rollout.Step, kube: Kube
) -> None:
    """An Event (and a log line) when the rollout changes phase or candidate."""
    now = step.status or {}
    was = before or {}
    if step.event is None or (now.get("phase"), now.get("candidateRevision")) == (
        was.get("phase"),
        was.get("candidateRevision"),
    ):
        return
    kind, reason, message = step.event
    metadata = body.get("metadata") or {}
    (logger.warning if kind == "Warning" else logger.info)(
        "Model %s/%s: rollout %s: %s",
        metadata.get("namespace"),
        metadata.get("name"),
        reason,
        message,
    )
    await kube.post_event(body, kind, reason, message, COMPONENT)


async def _reconcile_external(
    world: ModelWorld,
    model: Model,
    kube: Kube,
    prober: Prober | None,
    *,
    previous: Manifest,
    persistent: bool,
) -> Outcome:
    """An external Model: its ExternalName Service, and whether its server answers (and
    conforms): that is all there is of it here."""
    external = model.spec.external
    assert external is not None
    outcome = Outcome(state=None, reason="")
    namespace, name = model.metadata.namespace or "default", model.metadata.name
    for api_version, kind in WORKLOAD_KINDS:
        if kind in world.children and await kube.delete(api_version, kind, namespace, name):
            outcome.deleted += 1
    checks: dict[str, conditions.Check] = {
        reasons.TEMPLATE_RESOLVED: conditions.passed(
            reasons.EXTERNAL, f"served outside the cluster at {external.url}"
        )
    }
    service = external_children.service(model)
    live = world.children.get("Service")
    if (
        service is not None
        and live is not None
        and (drift.spec_of(live) or {}).get("type") != "ExternalName"
        and await kube.delete("v1", "Service", namespace, name)
    ):
        # The Model ran here before: its ClusterIP Service cannot be turned into an alias in
        # place (the API server keeps its cluster IP), so it is replaced.
        outcome.deleted += 1
        live = None
    if service is not None:
        desired = drift.stamped(service)
        if drift.why_apply(desired, live) is not None:
            try:
                outcome.written.append(await kube.apply(desired))
                outcome.applied += 1
            except ApiError as error:
                if error.temporary and not (persistent and error.status >= 500):
                    raise
                outcome.refused = refusal(service, error)
        checks[reasons.CHILDREN_APPLIED] = outcome.refused or conditions.passed(
            reasons.APPLIED,
            f"Service {name} is an ExternalName for {service['spec']['externalName']}",
        )
    elif live is not None and await kube.delete("v1", "Service", namespace, name):
        outcome.deleted += 1
    verdict = (
        prober.verdict((namespace, name), external_target(namespace, external)) if prober else None
    )
    waiting = conditions.unknown(reasons.PROBING, f"asking {external.url}")
    checks[reasons.AVAILABLE] = verdict.available if verdict else waiting
    if external.probe is not None:
        if verdict is None:
            checks[reasons.CONFORMANT] = waiting
        else:
            checks[reasons.CONFORMANT] = verdict.conformant or conditions.unknown(
                reasons.AWAITING_ENDPOINT,
                f"POST {external.probe.path} is sent once the server answers",
            )
    if outcome.refused is not None:
        ready, state = outcome.refused, ModelState.FAILED
    elif verdict is None:
        ready, state = conditions.failed(waiting.reason, waiting.message), ModelState.PENDING
    elif not verdict.ok:
        failing = [c for c in (verdict.available, verdict.conformant) if c is not None and not c.ok]
        ready, state = failing[0], ModelState.FAILED
    else:
        ready = conditions.passed(
            reasons.ANSWERING, (verdict.conformant or verdict.available).message
        )
        state = ModelState.READY
    checks.update(kstatus(ready, state))
    checks[reasons.READY] = ready
    generation = model.metadata.generation
    status: Manifest = {
        "state": state.value,
        "conditions": conditions.merge(previous.get("conditions"), checks, generation),
        "observedGeneration": generation,
        "endpoint": external.url,
    }
    _classes(status, verdict.classes if verdict else None, external.classes)
    outcome.state, outcome.reason = state.value, ready.reason
    return await _publish(world.model, previous, status, kube, outcome)


async def _publish(
    body: Manifest, previous: Manifest, status: Manifest, kube: Kube, outcome: Outcome
) -> Outcome:
    """Write status when it differs from what is there, and announce what changed.

    Status is exactly what is true now: a field the new status leaves out (the image and
    replicas of a Model moved out of the cluster) is removed, not kept by the merge patch."""
    if status_changed(previous, status):
        metadata = body["metadata"]
        dropped = {key: None for key in previous if key not in status}
        written = await kube.patch_status(
            API_VERSION,
            "Model",
            metadata.get("namespace"),
            metadata["name"],
            {**dropped, **status},
        )
        outcome.status_written = True
        outcome.written.append(written)
        await _announce(body, previous, status, kube)
    return outcome


async def _announce(body: Manifest, previous: Manifest, status: Manifest, kube: Kube) -> None:
    """An Event when the state or the Ready reason changes, or when the autoscaler stops being
    able to scale; never on a mere re-write."""
    scaling = conditions.find(status["conditions"], reasons.AUTOSCALING) or {}
    scaling_before = conditions.find(previous.get("conditions"), reasons.AUTOSCALING) or {}
    if scaling.get("status") == "False" and scaling.get("reason") != scaling_before.get("reason"):
        await kube.post_event(
            body, "Warning", str(scaling.get("reason")), str(scaling.get("message", "")), COMPONENT
        )
    ready = conditions.find(status["conditions"], reasons.READY) or {}
    before = conditions.find(previous.get("conditions"), reasons.READY) or {}
    if previous.get("state") == status["state"] and before.get("reason") == ready.get("reason"):
        return
    metadata = body.get("metadata") or {}
    # The operator's log at its default level: one line per change a person would want told.
    (logger.warning if status["state"] == ModelState.FAILED.value else logger.info)(
        "Model %s/%s: %s (%s): %s",
        metadata.get("namespace"),
        metadata.get("name"),
        status["state"],
        ready.get("reason"),
        ready.get("message", ""),
    )
    if not previous.get("state") and status["state"] in (
        ModelState.DEPLOYING.value,
        ModelState.PENDING.value,
    ):
        # A new Model starting to deploy is not news (one write saved per Model); a first
        # state that is a failure is, and is announced below as a Warning.
        return
    failed = status["state"] == ModelState.FAILED.value
    await kube.post_event(
        body,
        "Warning" if failed else "Normal",
        ready.get("reason", "Unknown"),
        f"{status['state']}: {ready.get('message', '')}",
        COMPONENT,
    )


async def _write_broken(
    body: Manifest,
    previous: Manifest,
    blocking: conditions.Check | None,
    kube: Kube,
    outcome: Outcome,
) -> Outcome:
    assert blocking is not None
    generation = (body.get("metadata") or {}).get("generation")
    status = {
        **previous,
        "state": ModelState.FAILED.value,
        "conditions": conditions.merge(
            previous.get("conditions"),
            {**kstatus(blocking, ModelState.FAILED), reasons.READY: blocking},
            generation,
        ),
        "observedGeneration": generation,
    }
    outcome.state, outcome.reason = status["state"], blocking.reason
    return await _publish(body, previous, status, kube, outcome)


__all__ = ["ApiError", "ModelWorld", "Outcome", "reconcile_model"]
