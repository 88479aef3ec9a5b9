"""kstatus's conditions, Reconciling and Stalled, for every kind: what Flux's health checks,
Argo CD and cli-utils read to tell "still on its way" from "needs a person" — so one module says
when each applies."""

from __future__ import annotations

from modelyard.api.v1alpha1 import ModelState
from modelyard.status import conditions, reasons
from modelyard.status.model import Observation


def for_model(
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


def from_ready(
    checks: dict[str, conditions.Check], permanent: frozenset[str]
) -> dict[str, conditions.Check]:
    """`checks` with kstatus's Stalled or Reconciling before Ready, for the kinds whose Ready
    alone says it (templates, registries, versions): a failure whose reason is in `permanent`
    only a change can help (Stalled: Flux fails at once), any other is still being worked on
    (Reconciling). Each present only while True."""
    ready = checks.get("Ready")
    if ready is None or ready.ok:
        return checks
    kind = "Stalled" if ready.reason in permanent else "Reconciling"
    others = {k: v for k, v in checks.items() if k != "Ready"}
    return {
        **others,
        kind: conditions.Check(conditions.TRUE, ready.reason, ready.message),
        "Ready": ready,
    }
