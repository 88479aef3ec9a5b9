"""One ModelVersion, reconciled: is the published image what it claims to be?

First verification: the digest must exist and the tag, when given, must point to it; only then is
the version Ready and its `status.image` (by digest) usable by Models. Later checks: if the digest
disappears the version stops being Ready (Models keep what runs but roll to nothing new); if the
tag moves, that is reported — a TagCurrent=False condition and a Warning Event — and never
followed, because the digest is what was published. A registry outage changes nothing that was
already verified.

When the Registry has a signature policy, the digest must also carry a cosign signature by one
of its keys (the Signed condition); in Enforce mode it is not Ready until it does, and a key
taken out of the policy un-readies what it signed at the next check — Models running it keep
running and say so, and roll to nothing new.

A version from an MLflow registry follows the same rules: the registered model version must exist
and be READY in MLflow; an alias is resolved once and the version number pinned in
`status.mlflow`, a later move is reported (AliasCurrent=False, AliasMoved) and never followed; a
version deleted in MLflow stops being Ready (VersionNotFound). A verified version's signature
(the input columns its MLmodel file declares) is recorded in `status.mlflow.signature`, for the
MLflow probe to judge the template's sample by; failing to read it is logged, never un-Ready.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from modelyard import metrics
from modelyard.api.v1alpha1 import API_VERSION, ModelVersion
from modelyard.kube import Kube
from modelyard.reconcile.common import describe, status_changed, warn_once, with_nulls
from modelyard.reconcile.registry import Connection
from modelyard.registry.http import RegistryError
from modelyard.registry.mlflow import MlflowClient
from modelyard.registry.verify import MlflowVerification, verify, verify_mlflow
from modelyard.registry.weights import check_shape
from modelyard.status import conditions, kstatus, reasons

logger = logging.getLogger(__name__)
Manifest = dict[str, Any]
COMPONENT = "modelyard"


@dataclass
class VersionOutcome:
    ready: bool
    reason: str
    status: Manifest | None
    #: A registry call failed in a way worth retrying soon.
    temporary: bool = False
    #: The version is Ready, and its files are to be pinned by the next pass: a pin may take
    #: long (a model's every byte), and the version's verdict does not wait for it.
    pin_next: bool = False


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


@dataclass
class _Found:
    """What one verification found, as status fields; `unchanged` keeps the status as it is
    (an outage after a successful verification changes nothing)."""

    checks: dict[str, conditions.Check]
    image: str | None
    tag_digest: str | None
    mlflow: Manifest | None
    verified_time: str | None
    temporary: bool = False
    unchanged: bool = False
    pin_next: bool = False


async def reconcile_version(
    body: Manifest,
    same_version: list[Manifest],
    connection: Connection | None,
    kube: Kube,
    registry_problem: str | None = None,
) -> VersionOutcome:
    """`registry_problem`: why the Registry has no connection, when it has none."""
    metadata = body.get("metadata") or {}
    previous: Manifest = dict(body.get("status") or {})
    was_verified = conditions.is_true(previous.get("conditions"), reasons.VERIFIED)
    found = _Found(
        {},
        previous.get("image"),
        previous.get("tagDigest"),
        previous.get("mlflow"),
        previous.get("verifiedTime"),
    )
    if previous.get("weights"):
        found.image = previous["weights"]
    try:
        version = ModelVersion.model_validate(body)
    except ValidationError as error:
        version = None
        found.checks = {reasons.READY: conditions.failed(reasons.INVALID_SPEC, describe(error))}
    owner = first_published(body, same_version)
    if version is None:
        pass
    elif owner is not None:
        name = owner["metadata"]["name"]
        found.checks = {
            reasons.READY: conditions.failed(
                reasons.DUPLICATE_VERSION,
                f"{version.spec.model} {version.spec.version} is already published "
                f"as ModelVersion {name}",
            )
        }
        found.image = None
    elif connection is None or not connection.ready:
        why = (
            connection.message
            if connection
            else registry_problem or "it does not exist or was not checked yet"
        )
        if was_verified:
            return await _unreachable_since_verified(
                body, previous, f"Registry {version.spec.registry} is not ready: {why}", kube
            )
        found.checks = {
            reasons.READY: conditions.failed(
                reasons.REGISTRY_NOT_READY, f"Registry {version.spec.registry} is not ready: {why}"
            )
        }
    elif version.spec.mlflow is not None:
        await _verify_mlflow_version(version, connection, was_verified, found)
    else:
        await _verify_image(version, connection, was_verified, found)
    if found.unchanged:
        ready = found.checks.get(reasons.READY)
        return await _unreachable_since_verified(
            body, previous, ready.message if ready else "the registry did not answer", kube
        )
    checks = kstatus.from_ready(found.checks, reasons.PERMANENT)
    ready = checks[reasons.READY]
    status: Manifest = {
        "conditions": conditions.merge(
            previous.get("conditions"), checks, metadata.get("generation")
        ),
        "observedGeneration": metadata.get("generation"),
        "tagDigest": found.tag_digest,
        "verifiedTime": found.verified_time if ready.ok else None,
        "mlflow": found.mlflow,
    }
    # `image` holds what was verified, the image or the weights; both fields are always
    # written, so whichever does not apply never lingers.
    usable = found.image if ready.ok else None
    weights = version is not None and version.spec.weights is not None
    status["image"] = None if weights else usable
    status["weights"] = usable if weights else None
    if not status_changed(previous, status):
        return VersionOutcome(ready.ok, ready.reason, None, found.temporary, found.pin_next)
    # status.mlflow is replaced whole: files pinned of another run, or a problem since
    # solved, must not survive in it key by key.
    patch = {**status, "mlflow": with_nulls(previous.get("mlflow"), status["mlflow"])}
    written = await kube.patch_status(
        API_VERSION, "ModelVersion", metadata.get("namespace"), metadata["name"], patch
    )
    await _announce(body, previous, checks, kube)
    return VersionOutcome(ready.ok, ready.reason, written, found.temporary, found.pin_next)


async def _unreachable_since_verified(
    body: Manifest, previous: Manifest, why: str, kube: Kube
) -> VersionOutcome:
    """A verified version whose registry cannot be asked now stays Ready (what was verified
    is still what runs, and Models must not roll for an outage), and says that it could not
    be checked: RegistryReachable=False, present only while that lasts."""
    metadata = body.get("metadata") or {}
    kept = {
        str(c.get("type")): conditions.Check(
            str(c.get("status")), str(c.get("reason")), str(c.get("message", ""))
        )
        for c in previous.get("conditions") or []
        if c.get("type") not in (reasons.READY, reasons.REGISTRY_REACHABLE)
    }
    before = conditions.find(previous.get("conditions"), reasons.READY) or {}
    ready = conditions.Check(
        str(before.get("status")), str(before.get("reason")), str(before.get("message", ""))
    )
    kept[reasons.REGISTRY_REACHABLE] = conditions.failed(reasons.REGISTRY_NOT_READY, why)
    kept[reasons.READY] = ready
    status = {
        **previous,
        "conditions": conditions.merge(
            previous.get("conditions"), kept, metadata.get("generation")
        ),
    }
    written = None
    if status_changed(previous, status):
        written = await kube.patch_status(
            API_VERSION, "ModelVersion", metadata.get("namespace"), metadata["name"], status
        )
    return VersionOutcome(ready.ok, ready.reason, written, temporary=True)


def published(version: ModelVersion) -> tuple[str, str, str | None]:
    """What a version in an OCI registry publishes (its image, or its weights)."""
    found = version.spec.published()
    assert found is not None
    return found


async def _verify_image(
    version: ModelVersion, connection: Connection, was_verified: bool, found: _Found
) -> None:
    """The image, or the weights, of a version in an OCI registry (`found.image` holds either's
    reference)."""
    repository, digest, tag = published(version)
    result = await verify(connection.client, repository, digest, tag)
    metrics.VERIFICATIONS.labels(result.reason).inc()
    host = urlsplit(connection.client.endpoint.url).netloc
    reference = f"{host}/{repository}@{digest}"
    if result.temporary:
        found.unchanged = was_verified
        found.checks = {
            reasons.READY: conditions.failed(reasons.REGISTRY_NOT_READY, result.message)
        }
        found.temporary = True
    elif was_verified and result.reason == reasons.DIGEST_MISMATCH:
        # Verified before and the digest still exists: the tag moved. Report, never follow.
        found.checks = {
            reasons.VERIFIED: conditions.passed(reasons.DIGEST_VERIFIED, f"{digest} still exists"),
            reasons.TAG_CURRENT: conditions.failed(reasons.TAG_MOVED, result.message),
            reasons.READY: conditions.passed(
                reasons.DIGEST_VERIFIED, f"runs {digest}; {result.message}"
            ),
        }
        found.image = reference
        found.tag_digest = result.tag_digest
    elif result.verified:
        found.checks = {
            reasons.VERIFIED: conditions.passed(reasons.DIGEST_VERIFIED, result.message),
            reasons.TAG_CURRENT: conditions.passed(
                reasons.TAG_UNCHANGED if tag else reasons.NO_TAG,
                f"tag {tag} points to the published digest" if tag else "no tag given",
            ),
            reasons.READY: conditions.passed(reasons.DIGEST_VERIFIED, result.message),
        }
        found.image = reference
        found.tag_digest = result.tag_digest
        if not was_verified:
            found.verified_time = conditions.now()
    else:
        found.checks = {
            reasons.VERIFIED: conditions.failed(result.reason, result.message),
            reasons.READY: conditions.failed(result.reason, result.message),
        }
        found.image, found.tag_digest = None, result.tag_digest
    if found.image is not None and version.spec.weights is not None:
        await _check_mountable(version, connection, was_verified, found)
    if found.image is not None and connection.trust is not None:
        await _check_signed(version, connection, was_verified, found)


async def _check_mountable(
    version: ModelVersion, connection: Connection, was_verified: bool, found: _Found
) -> None:
    """Weights a node would mount empty, fail to mount, or confuse with others are refused
    before any pod refers to them (`registry.weights`). Checked at every verification: the
    digest pins the shape, but a check that could not be made must be made later."""
    repository, digest, _ = published(version)
    try:
        problem = await check_shape(connection.client, repository, digest)
    except RegistryError as error:
        found.unchanged = was_verified and error.temporary
        found.checks = {
            reasons.READY: conditions.failed(
                reasons.REGISTRY_NOT_READY if error.temporary else error.reason,
                f"cannot read the weights' manifest: {error.message}",
            )
        }
        found.temporary = error.temporary
        found.image = None
        return
    if problem is None:
        found.checks[reasons.MOUNTABLE] = conditions.passed(
            reasons.IMAGE_LAYERS, "an image of tar layers: a node mounts its files"
        )
        return
    refused = conditions.failed(
        reasons.WEIGHTS_NOT_MOUNTABLE, f"{repository}@{digest} is {problem}"
    )
    found.checks = {
        **{kind: c for kind, c in found.checks.items() if kind != reasons.READY},
        reasons.MOUNTABLE: refused,
        reasons.READY: refused,
    }
    found.image = None


async def _check_signed(
    version: ModelVersion, connection: Connection, was_verified: bool, found: _Found
) -> None:
    """The digest is there; is it signed as the Registry's policy asks? In Enforce mode an
    unsigned or wrongly signed digest is not Ready (no Model rolls to it; one that runs it
    keeps running and says it no longer verifies); in Warn mode it is Ready and says so."""
    assert connection.trust is not None
    repository, digest, _ = published(version)
    signed = await connection.check_signatures(repository, digest)
    assert signed is not None
    if signed.temporary:
        found.unchanged = was_verified
        found.checks = {
            reasons.READY: conditions.failed(
                reasons.REGISTRY_NOT_READY, f"cannot read the signatures: {signed.message}"
            )
        }
        found.temporary = True
        found.image = None
        return
    check = (
        conditions.passed(signed.reason, signed.message)
        if signed.verified
        else conditions.failed(signed.reason, signed.message)
    )
    ready = found.checks[reasons.READY]
    if not check.ok and connection.trust.enforce:
        ready = check
        found.image = None
    found.checks = {
        **{kind: c for kind, c in found.checks.items() if kind != reasons.READY},
        reasons.SIGNED: check,
        reasons.READY: ready,
    }


async def _verify_mlflow_version(
    version: ModelVersion, connection: Connection, was_verified: bool, found: _Found
) -> None:
    source = version.spec.mlflow
    assert source is not None
    if connection.mlflow is None:
        found.checks = {
            reasons.READY: conditions.failed(
                reasons.REGISTRY_MISMATCH,
                f"Registry {version.spec.registry} is not of type mlflow, and this version "
                "comes from MLflow",
            )
        }
        return
    pinned = (found.mlflow or {}).get("version")
    result = await verify_mlflow(
        connection.mlflow, source.name, version=source.version, alias=source.alias, pinned=pinned
    )
    metrics.VERIFICATIONS.labels(result.reason).inc()
    found.unchanged = result.temporary and was_verified and result.reason != reasons.VERSION_PENDING
    previous = found.mlflow
    found.checks, found.mlflow = _mlflow_checks(source.alias, result, found.mlflow)
    found.temporary = result.temporary
    found.image = None
    if result.verified and not was_verified:
        found.verified_time = conditions.now()
    if result.verified and found.mlflow is not None:
        signature = await _signature(
            connection.mlflow, version, source.name, found.mlflow["version"], previous
        )
        if signature is not None:
            found.mlflow["signature"] = signature
        kept = _kept_pin(found.mlflow, previous)
        if kept is not None:
            found.mlflow.update(kept)
        elif was_verified and (previous or {}).get("version") == found.mlflow["version"]:
            found.mlflow.update(
                await _pinned_files(
                    connection.mlflow, version, source.name, found.mlflow["version"], previous
                )
            )
        else:
            found.pin_next = True


#: The last failure to read a version's signature that was logged, by ModelVersion: each is
#: logged once, not at every check.
_SIGNATURE_FAILURES: dict[tuple[str | None, str], str] = {}


async def _signature(
    client: MlflowClient, version: ModelVersion, name: str, number: str, previous: Manifest | None
) -> Manifest | None:
    """`status.mlflow.signature` of the pinned version: its input columns, or None (no
    signature). Readiness is the version's, not its signature's: a failure keeps what was
    recorded of the same version, and is logged once."""
    key = (version.metadata.namespace, version.metadata.name)
    try:
        inputs = await client.signature(name, number)
    except RegistryError as error:
        if _SIGNATURE_FAILURES.get(key) != error.message:
            if len(_SIGNATURE_FAILURES) >= 4096:
                _SIGNATURE_FAILURES.clear()
            _SIGNATURE_FAILURES[key] = error.message
            logger.warning(
                "ModelVersion %s/%s: cannot read the signature of %s version %s: %s",
                *key,
                name,
                number,
                error.message,
            )
        kept = previous or {}
        return kept.get("signature") if kept.get("version") == number else None
    _SIGNATURE_FAILURES.pop(key, None)
    if not inputs:
        return None
    return {
        "inputs": [
            {"name": column.name, "type": column.type, "required": column.required}
            for column in inputs
        ]
    }


def _kept_pin(now: Manifest, previous: Manifest | None) -> Manifest | None:
    """The files pinned of this very version before: same number, same run, same source (a
    registered model deleted and made again numbers its versions from 1 again)."""
    kept = previous or {}
    same = all(kept.get(field) == now.get(field) for field in ("version", "runId", "source"))
    if same and kept.get("files"):
        return {"files": kept["files"]}
    return None


#: How long one pin may take: every byte of a model, through the tracking server.
PIN_BUDGET_SECONDS = 1800.0


async def _pinned_files(
    client: MlflowClient, version: ModelVersion, name: str, number: str, previous: Manifest | None
) -> Manifest:
    """`status.mlflow.files`: the pinned version's files by content, hashed once — a version
    number's files are MLflow's to keep, and if they change afterwards it is the workers that
    refuse them, not a new pin that follows them. Readiness is not the files': a failure is
    `filesProblem` (quoted by Models that need the files, tried again at the next check),
    logged when it changes."""
    key = (version.metadata.namespace, version.metadata.name)
    try:
        async with asyncio.timeout(PIN_BUDGET_SECONDS):
            pinned = await client.pin_files(name, number)
    except TimeoutError:
        why = f"fetching the files took longer than {PIN_BUDGET_SECONDS:g} s"
    except RegistryError as error:
        why = error.message
    else:
        if pinned is None:
            why = (
                "the tracking server does not serve its files (they are kept where only "
                "MLflow's own client reaches them; `mlflow server --serve-artifacts` serves them)"
            )
        else:
            return {
                "files": {
                    "artifacts": pinned.path,
                    "digest": pinned.digest,
                    "sizeBytes": pinned.size,
                    "sha256": pinned.files,
                },
                "filesProblem": None,
            }
    if (previous or {}).get("filesProblem") != why:
        logger.warning(
            "ModelVersion %s/%s: cannot pin the files of %s version %s: %s",
            *key,
            name,
            number,
            why,
        )
    return {"filesProblem": why}


def _mlflow_checks(
    alias: str | None, found: MlflowVerification, previous: Manifest | None
) -> tuple[dict[str, conditions.Check], Manifest | None]:
    """Conditions for a version from MLflow, and its `status.mlflow`: the version first found
    stays pinned, whatever the alias does afterwards."""
    if not found.verified or found.found is None:
        reason = reasons.REGISTRY_NOT_READY if found.reason in _UNREACHABLE else found.reason
        checks = {reasons.READY: conditions.failed(reason, found.message)}
        if found.reason not in _UNREACHABLE:
            checks[reasons.VERIFIED] = conditions.failed(found.reason, found.message)
        return checks, previous
    version = found.found
    if alias is None:
        alias_check = conditions.passed(reasons.NO_ALIAS, "a version number was given")
    elif found.alias_version == version.version:
        alias_check = conditions.passed(
            reasons.ALIAS_UNCHANGED, f"alias {alias} points to the pinned version {version.version}"
        )
    else:
        now = f"version {found.alias_version}" if found.alias_version else "no version"
        alias_check = conditions.failed(
            reasons.ALIAS_MOVED,
            f"alias {alias} now points to {now}; version {version.version} stays pinned "
            "(publish a new ModelVersion to run another one)",
        )
    ready_message = found.message
    if not alias_check.ok:
        ready_message += f"; {alias_check.message}"
    status = {
        "version": version.version,
        "modelUri": version.model_uri,
        "runId": version.run_id,
        "source": version.source,
        "createdTime": version.created_time,
        "aliasVersion": found.alias_version,
    }
    return {
        reasons.VERIFIED: conditions.passed(reasons.VERSION_VERIFIED, found.message),
        reasons.ALIAS_CURRENT: alias_check,
        reasons.READY: conditions.passed(reasons.VERSION_VERIFIED, ready_message),
    }, {key: value for key, value in status.items() if value is not None}


_UNREACHABLE = (reasons.UNREACHABLE, reasons.UNAUTHORIZED, reasons.TLS_ERROR)


async def _announce(
    body: Manifest, previous: Manifest, checks: dict[str, conditions.Check], kube: Kube
) -> None:
    before = conditions.find(previous.get("conditions"), reasons.READY) or {}
    ready = checks[reasons.READY]
    if before.get("reason") != ready.reason or before.get("status") != ready.status:
        metadata = body.get("metadata") or {}
        (logger.info if ready.ok else logger.warning)(
            "ModelVersion %s/%s: %s: %s",
            metadata.get("namespace"),
            metadata.get("name"),
            ready.reason,
            ready.message,
        )
        await kube.post_event(
            body, "Normal" if ready.ok else "Warning", ready.reason, ready.message, COMPONENT
        )
    if ready.ok:
        # Warn mode: the version runs unsigned, and says so (Enforce: the Ready Event did).
        await warn_once(
            kube, body, previous.get("conditions"), reasons.SIGNED, checks.get(reasons.SIGNED)
        )
    for condition, reason in (
        (reasons.TAG_CURRENT, reasons.TAG_MOVED),
        (reasons.ALIAS_CURRENT, reasons.ALIAS_MOVED),
    ):
        moved = checks.get(condition)
        moved_before = conditions.find(previous.get("conditions"), condition) or {}
        if (
            moved is not None
            and moved.reason == reason
            and (moved_before.get("reason"), moved_before.get("message")) != (reason, moved.message)
        ):
            await kube.post_event(body, "Warning", reason, moved.message, COMPONENT)
