"""The writes a pass makes to the children of a Model run in the cluster: apply what differs,
delete what must not exist, hand replicas over to an autoscaler or a capacity dip, and stop
workers that read a Secret which no longer consents. Kept together so one module answers for
what the operator changes in a user's namespace; an external Model's Service (and the workers
it no longer has) are `external`'s."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from modelyard.builders import drift, labels
from modelyard.builders.plan import Plan
from modelyard.kube import ApiError, Kube
from modelyard.reconcile import consent, rollout
from modelyard.reconcile.model.capacity import capped, held
from modelyard.reconcile.model.status import refusal
from modelyard.reconcile.model.warming import unwanted
from modelyard.reconcile.model.world import ModelWorld, Outcome
from modelyard.registry.credentials import CONSENT_LABEL, CONSENT_VALUE
from modelyard.status import conditions, reasons

logger = logging.getLogger(__name__)

Manifest = dict[str, Any]


#: What a new Model's first turn applies (`first_turn`): its workers.
FIRST_TURN_KINDS = frozenset({"Deployment"})


async def apply_children(
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
    manifests = to_apply(plan.children.manifests, first_turn, step)
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
    if step is not None:
        await _warm(step, namespace, kube, outcome, persistent=persistent)
    return deployment


async def _warm(
    step: rollout.Step, namespace: str, kube: Kube, outcome: Outcome, *, persistent: bool
) -> None:
    """Make the warming pods the rollout waits for, delete those whose warming is over. A pod
    the server refuses (a quota, a policy) ends the wait: what serves is not the Model's
    failure, and the workers, not warming pods, are what the namespace's rules are for. The
    refusal is recorded in the rollout's status, whose next pass goes on without warming."""
    answers = await asyncio.gather(
        *(kube.apply(pod) for pod in step.warm),
        *(kube.delete("v1", "Pod", namespace, name) for name in step.cold),
        return_exceptions=True,
    )
    temporary: ApiError | None = None
    for index, answer in enumerate(answers):
        if isinstance(answer, ApiError):
            refused_pod = index < len(step.warm)
            if answer.temporary and not (persistent and answer.status >= 500):
                temporary = temporary or answer
            elif refused_pod and step.status is not None:
                said = refusal(step.warm[index], answer).message
                logger.warning(
                    "Model in %s: warming refused, going on without: %s", namespace, said
                )
                step.status = {**step.status, "warmingRefused": said[:1000]}
                step.recheck_after = 1.0
            else:
                logger.warning(
                    "warming pod %s/%s not deleted: %s",
                    namespace,
                    step.cold[index - len(step.warm)],
                    answer,
                )
        elif isinstance(answer, BaseException):
            raise answer
    if temporary is not None:
        raise temporary


async def drop_warming(world: ModelWorld, kube: Kube) -> int:
    """Delete the warming pods the scheduler has not placed of a Model that has no rollout to
    decide (its plan blocked or invalid, or it became external): such a pod would otherwise
    wait, and hold its room, for as long as that lasts — its deadline counts only once it
    runs. Placed ones end by their own deadline, and a pull under way is not thrown away for a
    registry that is not ready for a moment."""
    namespace = world.model["metadata"].get("namespace") or "default"
    placed = {
        str((pod.get("metadata") or {}).get("name"))
        for pod in world.warm_pods
        if (pod.get("spec") or {}).get("nodeName")
    }
    names = [name for name in unwanted(world, None) if name not in placed]
    gone = await asyncio.gather(
        *(kube.delete("v1", "Pod", namespace, name) for name in names), return_exceptions=True
    )
    for name, answer in zip(names, gone, strict=True):
        if isinstance(answer, BaseException):
            logger.warning("warming pod %s/%s not deleted: %s", namespace, name, answer)
    return sum(1 for answer in gone if answer is True)


def to_apply(
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
        manifests = [capped(m, step.ceiling) for m in manifests]
    if step is not None and step.hold is not None:
        manifests = [held(m, step.hold) for m in manifests]
    return manifests


#: The field manager that takes a serving worker away for a canary (allowCapacityDip), and
#: gives it back.
CAPACITY_DIP = "modelyard-capacity-dip"


async def set_serving_replicas(world: ModelWorld, replicas: int, kube: Kube) -> Manifest:
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


async def withdraw_revoked(
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
