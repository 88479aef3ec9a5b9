"""One ModelTemplate, reconciled: is it usable, and which Models use it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelyard.api.v1alpha1 import API_VERSION, ModelTemplate, SignatureMode
from modelyard.builders.plan import check_template
from modelyard.config import OperatorConfig
from modelyard.kube import Kube
from modelyard.reconcile.common import describe, status_changed, warn_once
from modelyard.reconcile.registry import Connection
from modelyard.registry.http import RegistryError
from modelyard.status import conditions, kstatus, reasons

logger = logging.getLogger(__name__)
Manifest = dict[str, Any]
COMPONENT = "modelyard"
#: Held on every template so one that Models still use is not deleted from under them.
FINALIZER = "modelyard.dev/in-use-protection"


@dataclass
class TemplateOutcome:
    ready: bool
    reason: str
    status: Manifest | None


def _verdict(body: Manifest, config: OperatorConfig) -> conditions.Check:
    try:
        template = ModelTemplate.model_validate(body)
    except ValidationError as error:
        return conditions.failed(reasons.INVALID_SPEC, describe(error))
    return check_template(template, config)


async def write_template_status(
    body: Manifest,
    verdict: conditions.Check,
    models: list[str],
    kube: Kube,
    resolved_digest: str | None = None,
    *,
    pinning: bool = False,
    signed: conditions.Check | None = None,
) -> Manifest | None:
    """Write the template's status if it changed; the object as written, or None.

    `pinning`: this pass decided the pinned digest, so `resolved_digest` replaces it, None
    included — a digest pinned for an earlier tag must never outlive the tag. `signed`: what
    the image's signatures say, when its Registry asks for them."""
    previous: Manifest = dict(body.get("status") or {})
    generation = (body.get("metadata") or {}).get("generation")
    checks = {reasons.SIGNED: signed} if signed is not None else {}
    status: Manifest = {
        **previous,
        "conditions": conditions.merge(
            previous.get("conditions"),
            kstatus.from_ready({**checks, reasons.READY: verdict}, reasons.PERMANENT),
            generation,
        ),
        "observedGeneration": generation,
        "models": sorted(models),
    }
    if pinning or resolved_digest is not None:
        status["resolvedDigest"] = resolved_digest
    if not status_changed(previous, status):
        return None
    metadata = body["metadata"]
    written = await kube.patch_status(
        API_VERSION, "ModelTemplate", metadata.get("namespace"), metadata["name"], status
    )
    before = conditions.find(previous.get("conditions"), reasons.READY) or {}
    if before.get("reason") != verdict.reason:
        (logger.info if verdict.ok else logger.warning)(
            "ModelTemplate %s/%s: %s: %s",
            metadata.get("namespace"),
            metadata["name"],
            verdict.reason,
            verdict.message,
        )
        await kube.post_event(
            body, "Normal" if verdict.ok else "Warning", verdict.reason, verdict.message, COMPONENT
        )
    if signed is not None and signed.reason != verdict.reason:
        # Warn mode: the image runs unsigned, and says so (Enforce: the Ready Event did).
        await warn_once(kube, body, previous.get("conditions"), reasons.SIGNED, signed)
    return written


async def _resolve_tag(
    body: Manifest, connection: Connection | None
) -> tuple[conditions.Check, str | None]:
    """Pin the digest an image tag points to; kept until the template's spec changes."""
    spec = (body.get("spec") or {}).get("image") or {}
    tag = spec.get("tag")
    if not tag:
        return conditions.passed(reasons.VALID), None
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    if status.get("resolvedDigest") and status.get("observedGeneration") == generation:
        return conditions.passed(reasons.VALID), str(status["resolvedDigest"])
    registry = spec.get("registry")
    if connection is None or not connection.ready:
        why = connection.message if connection else "it does not exist or was not checked yet"
        return conditions.failed(
            reasons.IMAGE_UNRESOLVED,
            f"cannot resolve tag {tag}: Registry {registry} is not ready: {why}",
        ), None
    try:
        digest = await connection.client.resolve(spec.get("repository", ""), tag)
    except RegistryError as error:
        return conditions.failed(
            reasons.IMAGE_UNRESOLVED, f"cannot resolve tag {tag}: {error.message}"
        ), None
    if digest is None:
        return conditions.failed(
            reasons.TAG_NOT_FOUND,
            f"{connection.client.endpoint.host}/{spec.get('repository')} has no tag {tag}",
        ), None
    return conditions.passed(reasons.VALID), digest


async def _signed(
    body: Manifest, connection: Connection | None, digest: str | None, *, reuse: bool
) -> conditions.Check:
    """Whether the template's image is signed as its Registry's policy asks. `reuse`: a
    verdict younger than the check interval will do (every pass but the periodic check)."""
    spec = (body.get("spec") or {}).get("image") or {}
    registry = spec.get("registry")
    found = None
    if connection is not None and connection.ready and digest is not None:
        found = await connection.check_signatures(spec.get("repository", ""), digest, reuse=reuse)
    if found is not None and not found.temporary:
        if found.verified:
            return conditions.passed(found.reason, found.message)
        return conditions.failed(found.reason, found.message)
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    before = conditions.find(status.get("conditions"), reasons.SIGNED) or {}
    if before.get("status") == conditions.TRUE and status.get("observedGeneration") == generation:
        # Verified for this very spec before the registry stopped answering: still true.
        return conditions.passed(str(before.get("reason")), str(before.get("message", "")))
    if found is not None:
        why = found.message
    elif connection is None or connection.trust is None:
        why = f"Registry {registry} is not ready, so its signature policy cannot be applied"
    else:
        why = f"Registry {registry} is not ready: {connection.message}"
    return conditions.failed(reasons.REGISTRY_NOT_READY, f"cannot check the signatures: {why}")


async def reconcile_template(
    body: Manifest,
    models: list[str],
    kube: Kube,
    config: OperatorConfig,
    connection: Connection | None = None,
    *,
    signatures: SignatureMode | None = None,
    reuse_signatures: bool = True,
) -> TemplateOutcome:
    """Validate the template, list its Models, and guard its deletion while they use it.

    The finalizer is level-based like everything else: added while the template lives, and
    removed by the first pass that finds it being deleted with no Model left — which the
    deletion of the last Model triggers, so the template goes at once, with no retry timer.
    """
    metadata = body.get("metadata") or {}
    finalizers = list(metadata.get("finalizers") or [])
    if metadata.get("deletionTimestamp"):
        if models:
            names = ", ".join(sorted(models)[:20]) + (" …" if len(models) > 20 else "")
            verdict = conditions.failed(
                reasons.IN_USE,
                f"deletion waits until no Model uses this template; still used by: {names}",
            )
            return TemplateOutcome(
                False, verdict.reason, await write_template_status(body, verdict, models, kube)
            )
        if FINALIZER in finalizers:
            finalizers.remove(FINALIZER)
            await kube.set_finalizers(
                API_VERSION,
                "ModelTemplate",
                metadata.get("namespace"),
                metadata["name"],
                finalizers=finalizers,
                resource_version=metadata.get("resourceVersion"),
            )
        return TemplateOutcome(False, reasons.IN_USE, None)
    if FINALIZER not in finalizers:
        body = await kube.set_finalizers(
            API_VERSION,
            "ModelTemplate",
            metadata.get("namespace"),
            metadata["name"],
            finalizers=[*finalizers, FINALIZER],
            resource_version=metadata.get("resourceVersion"),
        )
    verdict = _verdict(body, config)
    resolved: str | None = None
    signed: conditions.Check | None = None
    if verdict.ok:
        tag_check, resolved = await _resolve_tag(body, connection)
        if not tag_check.ok:
            verdict = tag_check
        elif signatures is not None:
            image = (body.get("spec") or {}).get("image") or {}
            signed = await _signed(
                body, connection, image.get("digest") or resolved, reuse=reuse_signatures
            )
            if not signed.ok and signatures is SignatureMode.ENFORCE:
                verdict = signed
    # An edited template (its tag, or anything else) runs nothing pinned for the old spec:
    # its Models wait for the new digest (ImageUnresolved) and, under an Enforce policy, for
    # its signatures (TemplateNotReady), and keep what already runs.
    written = await write_template_status(
        body, verdict, models, kube, resolved, pinning=True, signed=signed
    )
    return TemplateOutcome(verdict.ok, verdict.reason, written)
