"""One ModelTemplate, reconciled: is it usable, and which Models use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelyard.api.v1alpha1 import API_VERSION, ModelTemplate
from modelyard.builders.plan import check_template
from modelyard.config import OperatorConfig
from modelyard.kube import Kube
from modelyard.reconcile.common import describe, status_changed
from modelyard.status import conditions, reasons

Manifest = dict[str, Any]
COMPONENT = "modelyard"


@dataclass
class TemplateOutcome:
    ready: bool
    reason: str
    status_written: bool


def _verdict(body: Manifest, config: OperatorConfig) -> conditions.Check:
    try:
        template = ModelTemplate.model_validate(body)
    except ValidationError as error:
        return conditions.failed(reasons.INVALID_SPEC, describe(error))
    return check_template(template, config)


async def write_template_status(
    body: Manifest, verdict: conditions.Check, models: list[str], kube: Kube
) -> bool:
    previous: Manifest = dict(body.get("status") or {})
    generation = (body.get("metadata") or {}).get("generation")
    status: Manifest = {
        **previous,
        "conditions": conditions.merge(
            previous.get("conditions"), {reasons.READY: verdict}, generation
        ),
        "observedGeneration": generation,
        "models": sorted(models),
    }
    if not status_changed(previous, status):
        return False
    metadata = body["metadata"]
    await kube.patch_status(
        API_VERSION, "ModelTemplate", metadata.get("namespace"), metadata["name"], status
    )
    before = conditions.find(previous.get("conditions"), reasons.READY) or {}
    if before.get("reason") != verdict.reason:
        await kube.post_event(
            body, "Normal" if verdict.ok else "Warning", verdict.reason, verdict.message, COMPONENT
        )
    return True


async def reconcile_template(
    body: Manifest, models: list[str], kube: Kube, config: OperatorConfig
) -> TemplateOutcome:
    """Validate the template and list its Models; Models themselves are reconciled by the caller."""
    verdict = _verdict(body, config)
    written = await write_template_status(body, verdict, models, kube)
    return TemplateOutcome(verdict.ok, verdict.reason, written)


async def hold_deletion(body: Manifest, models: list[str], kube: Kube) -> str | None:
    """While Models use the template, say so in its status; the message, or None when free."""
    if not models:
        return None
    names = ", ".join(sorted(models)[:20]) + (" …" if len(models) > 20 else "")
    message = f"deletion waits until no Model uses this template; still used by: {names}"
    await write_template_status(body, conditions.failed(reasons.IN_USE, message), models, kube)
    return message
