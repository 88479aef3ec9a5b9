"""A Model served outside the cluster (`spec.external`): an ExternalName Service for its URL,
no workers (any left from when it ran here go), and a status that says whether its server
answers and conforms."""

from __future__ import annotations

from typing import Any

from modelyard.api.v1alpha1 import (
    ExternalModel,
    Model,
    ModelState,
)
from modelyard.builders import drift
from modelyard.builders import external as external_children
from modelyard.kube import ApiError, Kube
from modelyard.reconcile.conformance import (
    Prober,
    Verdict,
    external_target,
)
from modelyard.reconcile.model.publish import publish
from modelyard.reconcile.model.status import classes, refusal, server
from modelyard.reconcile.model.world import WORKLOAD_KINDS, ModelWorld, Outcome
from modelyard.status import conditions, kstatus, reasons

Manifest = dict[str, Any]


async def reconcile_external(
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
                f"POST {external.probe.effective_path} is sent once the server answers",
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
    checks.update(kstatus.for_model(ready, state))
    checks[reasons.READY] = ready
    generation = model.metadata.generation
    status: Manifest = {
        "state": state.value,
        "conditions": conditions.merge(previous.get("conditions"), checks, generation),
        "observedGeneration": generation,
        "endpoint": external.url,
    }
    _as_the_server_says(status, verdict, external)
    outcome.state, outcome.reason = state.value, ready.reason
    return await publish(world.model, previous, status, kube, outcome)


def _as_the_server_says(status: Manifest, verdict: Verdict | None, external: ExternalModel) -> None:
    """The classes and the metadata the server last gave, when it was asked for them."""
    classes(status, verdict.classes if verdict else None, external.classes)
    server(status, verdict.server if verdict else None, external.probe)
