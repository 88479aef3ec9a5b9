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
    parse,
)
from modelyard.builders import drift
from modelyard.builders import external as external_children
from modelyard.builders import workload as wl
from modelyard.builders.plan import Plan, plan_model
from modelyard.config import OperatorConfig
from modelyard.kube import ApiError, Kube
from modelyard.reconcile.common import (
    ReconcileError,
    describe,
    parse_all,
    parse_cached,
    status_changed,
)
from modelyard.reconcile.conformance import Prober, external_target, service_target
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
) -> Manifest | None:
    """Apply what differs, delete the autoscaler that must not exist; the live Deployment after.

    The children are applied at once rather than one after the other: a pass then takes one
    round trip, not three. It matters most for Services, which the API server creates one at a
    time (each takes a ClusterIP under its allocator's lock): hundreds of seconds a burst would
    otherwise wait, Model after Model."""
    assert plan.children is not None
    manifests = plan.children.manifests
    if first_turn:
        manifests = [m for m in manifests if m["kind"] in FIRST_TURN_KINDS]
    autoscaled = bool({"HorizontalPodAutoscaler", "ScaledObject"} & set(world.children))

    async def apply(manifest: Manifest) -> Manifest | None:
        desired = drift.stamped(manifest)
        live = world.children.get(manifest["kind"])
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
        if manifest["kind"] == "Deployment" and not autoscaled:
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
            if manifest["kind"] == "Deployment":
                deployment = answer
    if temporary is not None:
        raise temporary
    if first_turn:
        return deployment
    for api_version, kind in plan.children.unwanted_autoscalers:
        if kind in world.children:
            metadata = world.model["metadata"]
            if await kube.delete(api_version, kind, metadata.get("namespace"), metadata["name"]):
                outcome.deleted += 1
    return deployment


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
) -> conditions.Check | None:
    """The Conformant condition of a Model whose template declares a probe (else None)."""
    if prober is None or workload is None or workload.template.probe is None:
        return None
    key = (workload.namespace or "default", workload.name)
    probe = workload.template.probe
    if observation.state is not ModelState.READY:
        prober.forget(key)
        return conditions.unknown(
            reasons.AWAITING_WORKERS, f"POST {probe.path} is sent once the workers are ready"
        )
    target = service_target(
        *key,
        port=workload.template.port,
        model_type=workload.template.model_type.value,
        probe=probe,
        revision=desired_hash,
        config=config.probes,
        cluster_ip=str(((service or {}).get("spec") or {}).get("clusterIP") or ""),
    )
    verdict = prober.verdict(key, target)
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
    blocking: conditions.Check | None
    try:
        # The same reading as `modelyard render`, root rules included (a name that cannot be a
        # Service name). The CRD schema makes most failures impossible; an older CRD cannot.
        parsed = parse(body)
        assert isinstance(parsed, Model)
        model: Model | None = parsed
    except ValidationError as error:
        model = None
        blocking = conditions.failed(reasons.INVALID_SPEC, describe(error))
    except ValueError as error:
        model = None
        blocking = conditions.failed(reasons.INVALID_SPEC, str(error))
    if model is not None and model.spec.external is not None:
        return await _reconcile_external(
            world, model, kube, prober, previous=previous, persistent=persistent
        )
    if model is not None:
        try:
            plan = await _plan(world, model, config, kube)
            blocking = plan.blocking
        except ReconcileError as error:
            blocking = conditions.failed(error.reason, error.message)
    outcome = Outcome(state=None, reason="")
    deployment = world.children.get("Deployment")
    workload = plan.workload if plan else None
    if plan is not None and plan.children is not None:
        first_turn = first_turn and "Deployment" not in world.children
        deployment = await _apply_children(
            plan, world, kube, outcome, first_turn=first_turn, persistent=persistent
        )
        if first_turn and outcome.refused is None:
            outcome.unfinished = True
            return outcome
    desired_hash = ""
    if plan is not None and plan.children is not None:
        pod_annotations = plan.children.deployment["spec"]["template"]["metadata"]["annotations"]
        desired_hash = pod_annotations["modelyard.dev/spec-hash"]
    min_workers = workload.scaling.min_workers if workload else 1
    observation = observe(
        deployment,
        world.pods,
        desired_hash,
        min_workers,
        workload.template.startup_timeout_seconds if workload else None,
    )
    if model is None:
        return await _write_broken(body, previous, blocking, kube, outcome)
    autoscaler = world.children.get("ScaledObject") or world.children.get("HorizontalPodAutoscaler")
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
            desired_hash,
            prober,
            config,
            service=world.children.get("Service"),
        ),
    )
    outcome.state, outcome.reason = status["state"], status["conditions"][-1]["reason"]
    scaling = conditions.find(status["conditions"], reasons.AUTOSCALING)
    if scaling is not None:
        outcome.autoscaling = (str(scaling.get("status") == "True"), str(scaling.get("reason")))
    return await _publish(body, previous, status, kube, outcome)


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
