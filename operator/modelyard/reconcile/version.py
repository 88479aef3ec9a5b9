"""One ModelVersion, reconciled: is the published image what it claims to be?

First verification: the digest must exist and the tag, when given, must point to it; only then is
the version Ready and its `status.image` (by digest) usable by Models. Later checks: if the digest
disappears the version stops being Ready (Models keep what runs but roll to nothing new); if the
tag moves, that is reported — a TagCurrent=False condition and a Warning Event — and never
followed, because the digest is what was published. A registry outage changes nothing that was
already verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from modelyard import metrics
from modelyard.api.v1alpha1 import API_VERSION, ModelVersion
from modelyard.kube import Kube
from modelyard.reconcile.common import describe, status_changed
from modelyard.reconcile.registry import Connection
from modelyard.registry.verify import verify
from modelyard.status import conditions, reasons

Manifest = dict[str, Any]
COMPONENT = "modelyard"


@dataclass
class VersionOutcome:
    ready: bool
    reason: str
    status: Manifest | None
    #: A registry call failed in a way worth retrying soon.
    temporary: bool = False


def first_published(body: Manifest, same_version: list[Manifest]) -> Manifest | None:
    """The ModelVersion that owns this (model, version) pair if it is not `body`: the oldest."""

    def order(candidate: Manifest) -> tuple[str, str]:
        metadata = candidate.get("metadata") or {}
        return (metadata.get("creationTimestamp") or "", metadata.get("name") or "")

    contenders = sorted([body, *same_version], key=order)
    winner = contenders[0]
    return (
        None
        if winner is body
        or winner.get("metadata", {}).get("uid") == body.get("metadata", {}).get("uid")
        else winner
    )


async def reconcile_version(
    body: Manifest, same_version: list[Manifest], connection: Connection | None, kube: Kube
) -> VersionOutcome:
    metadata = body.get("metadata") or {}
    previous: Manifest = dict(body.get("status") or {})
    was_verified = conditions.is_true(previous.get("conditions"), reasons.VERIFIED)
    checks: dict[str, conditions.Check]
    image, tag_digest = previous.get("image"), previous.get("tagDigest")
    verified_time = previous.get("verifiedTime")
    temporary = False
    try:
        version = ModelVersion.model_validate(body)
    except ValidationError as error:
        version = None
        checks = {reasons.READY: conditions.failed(reasons.INVALID_SPEC, describe(error))}
    owner = first_published(body, same_version)
    if version is None:
        pass
    elif owner is not None:
        name = owner["metadata"]["name"]
        checks = {
            reasons.READY: conditions.failed(
                reasons.DUPLICATE_VERSION,
                f"{version.spec.model} {version.spec.version} is already published "
                f"as ModelVersion {name}",
            )
        }
        image = None
    elif connection is None or not connection.ready:
        why = connection.message if connection else "it does not exist or was not checked yet"
        if was_verified:
            return VersionOutcome(True, reasons.DIGEST_VERIFIED, None, temporary=True)
        checks = {
            reasons.READY: conditions.failed(
                reasons.REGISTRY_NOT_READY, f"Registry {version.spec.registry} is not ready: {why}"
            )
        }
    else:
        result = await verify(
            connection.client, version.spec.repository, version.spec.digest, version.spec.tag
        )
        metrics.VERIFICATIONS.labels(result.reason).inc()
        host = urlsplit(connection.client.endpoint.url).netloc
        if result.temporary:
            if was_verified:
                return VersionOutcome(True, reasons.DIGEST_VERIFIED, None, temporary=True)
            checks = {reasons.READY: conditions.failed(reasons.REGISTRY_NOT_READY, result.message)}
            temporary = True
        elif was_verified and result.reason == reasons.DIGEST_MISMATCH:
            # Verified before and the digest still exists: the tag moved. Report, never follow.
            checks = {
                reasons.VERIFIED: conditions.passed(
                    reasons.DIGEST_VERIFIED, f"{version.spec.digest} still exists"
                ),
                reasons.TAG_CURRENT: conditions.failed(reasons.TAG_MOVED, result.message),
                reasons.READY: conditions.passed(
                    reasons.DIGEST_VERIFIED, f"runs {version.spec.digest}; {result.message}"
                ),
            }
            tag_digest = result.tag_digest
        elif result.verified:
            checks = {
                reasons.VERIFIED: conditions.passed(reasons.DIGEST_VERIFIED, result.message),
                reasons.TAG_CURRENT: conditions.passed(
                    reasons.TAG_UNCHANGED if version.spec.tag else reasons.NO_TAG,
                    f"tag {version.spec.tag} points to the published digest"
                    if version.spec.tag
                    else "no tag given",
                ),
                reasons.READY: conditions.passed(reasons.DIGEST_VERIFIED, result.message),
            }
            image, tag_digest = (
                f"{host}/{version.spec.repository}@{version.spec.digest}",
                result.tag_digest,
            )
            if not was_verified:
                verified_time = conditions.now()
        else:
            checks = {
                reasons.VERIFIED: conditions.failed(result.reason, result.message),
                reasons.READY: conditions.failed(result.reason, result.message),
            }
            image, tag_digest = None, result.tag_digest
    ready = checks[reasons.READY]
    status: Manifest = {
        "conditions": conditions.merge(
            previous.get("conditions"), checks, metadata.get("generation")
        ),
        "observedGeneration": metadata.get("generation"),
        "image": image if ready.ok else None,
        "tagDigest": tag_digest,
        "verifiedTime": verified_time if ready.ok else None,
    }
    if not status_changed(previous, status):
        return VersionOutcome(ready.ok, ready.reason, None, temporary)
    written = await kube.patch_status(
        API_VERSION, "ModelVersion", metadata.get("namespace"), metadata["name"], status
    )
    await _announce(body, previous, checks, kube)
    return VersionOutcome(ready.ok, ready.reason, written, temporary)


async def _announce(
    body: Manifest, previous: Manifest, checks: dict[str, conditions.Check], kube: Kube
) -> None:
    before = conditions.find(previous.get("conditions"), reasons.READY) or {}
    ready = checks[reasons.READY]
    if before.get("reason") != ready.reason or before.get("status") != ready.status:
        await kube.post_event(
            body, "Normal" if ready.ok else "Warning", ready.reason, ready.message, COMPONENT
        )
    moved = checks.get(reasons.TAG_CURRENT)
    moved_before = conditions.find(previous.get("conditions"), reasons.TAG_CURRENT) or {}
    if (
        moved is not None
        and moved.reason == reasons.TAG_MOVED
        and moved_before.get("reason") != reasons.TAG_MOVED
    ):
        await kube.post_event(body, "Warning", reasons.TAG_MOVED, moved.message, COMPONENT)
