"""What a pass tells people: the status write (only when it differs), and an Event and a log
line when the state, the Ready reason, the autoscaler or the rollout's phase changes — never on
a mere re-write, so Events say news."""

from __future__ import annotations

import logging
from typing import Any

from modelyard.api.v1alpha1 import (
    API_VERSION,
    ModelState,
)
from modelyard.kube import Kube
from modelyard.reconcile import rollout
from modelyard.reconcile.common import (
    status_changed,
    with_nulls,
)
from modelyard.reconcile.model.world import Outcome
from modelyard.status import conditions, kstatus, reasons

logger = logging.getLogger(__name__)

Manifest = dict[str, Any]


COMPONENT = "modelyard"


async def publish(
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
            {**dropped, **status, **_replaced(previous, status, "server")},
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


async def announce_rollout(
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


async def write_broken(
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
            {**kstatus.for_model(blocking, ModelState.FAILED), reasons.READY: blocking},
            generation,
        ),
        "observedGeneration": generation,
    }
    outcome.state, outcome.reason = status["state"], blocking.reason
    return await publish(body, previous, status, kube, outcome)


def _replaced(previous: Manifest, status: Manifest, field: str) -> Manifest:
    """`field` of the new status as the merge patch must send it to replace the old one whole:
    what a server says of its model is its latest word, and a key it no longer says (or
    another protocol's) must not linger (a merge patch merges objects key by key)."""
    if field not in status or not isinstance(previous.get(field), dict):
        return {}
    return {field: with_nulls(previous[field], status[field])}
