"""Which image a Model runs, from which Registry, pulled with which Secret: the version chosen
from the Model's range (only Ready versions, so only verified digests), a template's own image,
or an MLflow version run by the template's image. Pure, like the rest of `builders`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import semver

from modelyard.api.types import ConditionStatus, Resource
from modelyard.api.v1alpha1 import (
    MlflowFiles,
    Model,
    ModelTemplate,
    ModelVersion,
    Registry,
    RegistryType,
    SignatureMode,
    TemplateImage,
)
from modelyard.builders import versions as ranges
from modelyard.status import reasons
from modelyard.status.conditions import Check, failed, passed


def image_host(registry: Registry) -> str:
    """The host[:port] that image references on this registry start with."""
    return str(urlsplit(registry.spec.url).netloc)


#: The Secret type pods pull with (`kubectl create secret docker-registry`).
DOCKER_CONFIG_SECRET = "kubernetes.io/dockerconfigjson"


def pull_secret_name(registry: Registry, secret_type: str | None) -> str | None:
    """The Secret pods pull from `registry` with, given its credentials Secret's type: the
    user's own when it is a dockerconfigjson, else one the operator writes from it. A
    function of the spec and the Secret, never of whether the registry answered lately."""
    if registry.spec.type is not RegistryType.OCI or not registry.spec.credentials_secret:
        return None
    if secret_type == DOCKER_CONFIG_SECRET:
        return str(registry.spec.credentials_secret)
    return f"{registry.metadata.name}-pull"


def pull_secrets(registry: Registry) -> list[str] | None:
    """The Secret pods use to pull from `registry`, as the Registry reconcile published it;
    None while a Registry with credentials has not published one yet.

    Never the credentials Secret itself in its place: a basic-auth or token Secret is not a
    pull Secret (the kubelet ignores it and the pull fails with 401), and a Deployment made
    with it would roll again the moment the real one is published."""
    if registry.status and registry.status.pull_secret:
        return [registry.status.pull_secret]
    return None if registry.spec.credentials_secret else []


def registry_reason(registry: Registry) -> str:
    """What the Registry's Ready condition says, for a message that depends on it."""
    for condition in (registry.status.conditions if registry.status else None) or []:
        if condition.type == "Ready":
            return f"{condition.reason}: {condition.message}"
    return "not checked yet"


def template_image_reference(
    image: TemplateImage, registry: Registry, resolved_digest: str | None
) -> str:
    """By digest whenever one is known, so every worker runs the same bytes."""
    base = f"{image_host(registry)}/{image.repository}"
    digest = image.digest or resolved_digest
    return f"{base}@{digest}" if digest else f"{base}:{image.tag}"


def is_ready(resource: Resource) -> bool:
    """Whether the operator has marked `resource` Ready (read from its typed status)."""
    status = getattr(resource, "status", None)
    return status is not None and any(
        c.type == reasons.READY and c.status == ConditionStatus.TRUE for c in status.conditions
    )


def _unpinned(version: ModelVersion) -> bool:
    """A version from MLflow whose files are not pinned (yet): a template that loads files
    cannot run it."""
    mlflow = version.status.mlflow if version.status else None
    return mlflow is not None and mlflow.files is None


def _why_not_ready(version: ModelVersion) -> str:
    """A version's Ready reason, as a Model's status quotes it: `1.1.0 (SignatureMissing)`."""
    if is_ready(version) and _unpinned(version):
        assert version.status is not None and version.status.mlflow is not None
        why = version.status.mlflow.files_problem or "files not pinned yet"
        return f"{version.spec.version} ({reasons.WEIGHTS_NOT_PINNED}: {why})"
    for condition in (version.status.conditions if version.status else None) or []:
        if condition.type == reasons.READY and condition.status != ConditionStatus.TRUE:
            return f"{version.spec.version} ({condition.reason})"
    return f"{version.spec.version} (not checked yet)"


def select_version(
    model: Model, versions: Iterable[ModelVersion], *, files_needed: bool = False
) -> tuple[Check, ModelVersion | None]:
    """The highest Ready ModelVersion in the Model's range, or why there is none. A template
    that loads files (`files_needed`) passes over MLflow versions not pinned yet: what serves
    stays, rather than the Model waiting on a pin."""
    selector = model.spec.version
    assert selector is not None
    try:
        wanted = ranges.parse_range(selector.version)
    except ranges.RangeError as error:
        # A malformed range will never match anything: an error to fix, not something to wait for.
        return failed(
            reasons.INVALID_SPEC, f"spec.version.version {selector.version!r}: {error}"
        ), None
    candidates = [
        v for v in versions if v.spec.model == selector.model and wanted.matches(v.spec.version)
    ]
    ready = [
        v
        for v in candidates
        if is_ready(v)
        and v.status is not None
        and (v.status.image or v.status.mlflow or v.status.weights)
        and not (files_needed and _unpinned(v))
    ]
    running = model.status.resolved_version if model.status else None
    stopped = next((v for v in candidates if v.spec.version == running and v not in ready), None)
    if stopped is not None and not any(
        semver.Version.parse(v.spec.version) > semver.Version.parse(stopped.spec.version)
        for v in ready
    ):
        # What runs no longer verifies: keep it running, but roll to nothing else (no silent
        # downgrade to an older verified version either) until a newer version verifies.
        return (
            failed(
                reasons.VERSION_NOT_READY,
                f"ModelVersion {stopped.metadata.name} {_why_not_ready(stopped)} no longer "
                "verifies; it keeps running, with no new rollout until it verifies again or a "
                "newer version does",
            ),
            None,
        )
    if ready:
        best = max(ready, key=lambda v: semver.Version.parse(v.spec.version))
        newest = semver.Version.parse(best.spec.version)
        # A newer version in range that is not Ready (unsigned, not verified yet) is why the
        # Model stays where it is: said, so nobody wonders why it did not roll.
        passed_over = sorted(
            (v for v in candidates if semver.Version.parse(v.spec.version) > newest),
            key=lambda v: semver.Version.parse(v.spec.version),
        )
        skipped = (
            "; not Ready: " + ", ".join(_why_not_ready(v) for v in passed_over)
            if passed_over
            else ""
        )
        return passed(reasons.RESOLVED, f"{selector.model} {best.spec.version}{skipped}"), best
    if candidates:
        names = ", ".join(
            _why_not_ready(v)
            for v in sorted(candidates, key=lambda v: semver.Version.parse(v.spec.version))
        )
        return (
            failed(
                reasons.VERSION_NOT_READY,
                f"no verified ModelVersion of {selector.model} in {selector.version!r} yet "
                f"(unverified: {names})",
            ),
            None,
        )
    return (
        failed(
            reasons.VERSION_NOT_FOUND,
            f"no ModelVersion of {selector.model} matches {selector.version!r}",
        ),
        None,
    )


def mlflow_environment(registry: Registry, version: ModelVersion) -> list[dict[str, Any]]:
    """What MLflow's own client and serving container read to load the pinned version.

    The credentials go in only as references to the Registry's Secret, each optional: a Secret
    with `username` and `password` sets those two, one with a `token` sets the token, and MLflow
    uses whichever is there.
    """
    assert version.status is not None and version.status.mlflow is not None
    env: list[dict[str, Any]] = [
        {"name": "MLFLOW_TRACKING_URI", "value": registry.spec.url},
        {"name": "MODEL_URI", "value": version.status.mlflow.model_uri},
    ]
    secret = registry.spec.credentials_secret
    if secret:
        for variable, key in MLFLOW_CREDENTIAL_KEYS:
            env.append(
                {
                    "name": variable,
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}},
                }
            )
    if registry.spec.tls and registry.spec.tls.insecure_skip_verify:
        env.append({"name": "MLFLOW_TRACKING_INSECURE_TLS", "value": "true"})
    return env


MLFLOW_CREDENTIAL_KEYS = (
    ("MLFLOW_TRACKING_USERNAME", "username"),
    ("MLFLOW_TRACKING_PASSWORD", "password"),
    ("MLFLOW_TRACKING_TOKEN", "token"),
)


@dataclass
class Resolved:
    image: str | None = None
    registry: Registry | None = None
    version: str | None = None
    #: Set for a version from MLflow: where the template's image finds the model.
    env: list[dict[str, Any]] = field(default_factory=list)
    #: Set for a version of weights: their reference by digest, mounted into the template's
    #: image, and the Registry they are pulled from.
    weights: str | None = None
    weights_registry: Registry | None = None
    #: Set for a version from MLflow run by a template with a weights path: its files, pinned
    #: by content, which the workers fetch there and check before the runtime starts.
    mlflow_files: MlflowFiles | None = None
    #: What the init step that fetches them reads to reach MLflow (URI, credentials).
    mlflow_access: tuple[dict[str, Any], ...] = ()


def resolve_image(
    model: Model,
    template: ModelTemplate,
    registries: Mapping[str, Registry],
    versions: Iterable[ModelVersion],
    checks: dict[str, Check],
    *,
    allow_tag: bool,
) -> Resolved:
    """Image reference, its Registry and the chosen version; a named version wins. A version
    from MLflow runs the template's image, told where the model is."""
    resolved = Resolved()
    registry_name: str | None = None
    if model.spec.version is not None:
        version_check, chosen = select_version(
            model, versions, files_needed=template.spec.weights is not None
        )
        checks[reasons.VERSION_RESOLVED] = version_check
        if chosen is not None and chosen.status is not None and chosen.status.mlflow is not None:
            resolved.version = chosen.spec.version
            mlflow_registry = registries.get(chosen.spec.registry)
            if mlflow_registry is None:
                checks[reasons.VERSION_RESOLVED] = failed(
                    reasons.REGISTRY_NOT_FOUND,
                    f"Registry {chosen.spec.registry} does not exist in this namespace",
                )
                return resolved
            if template.spec.image is None:
                checks[reasons.VERSION_RESOLVED] = failed(
                    reasons.IMAGE_REQUIRED,
                    f"ModelVersion {chosen.metadata.name} comes from MLflow and runs in its "
                    f"template's image, but template {template.metadata.name} has no image",
                )
                return resolved
            resolved.env = mlflow_environment(mlflow_registry, chosen)
            registry_name = template.spec.image.registry
            if template.spec.weights is not None:
                problem = _fetched_files(template, chosen, resolved)
                if problem is not None:
                    checks[reasons.VERSION_RESOLVED] = problem
                    return resolved
        elif chosen is not None and chosen.status is not None and chosen.status.weights:
            resolved.version = chosen.spec.version
            problem = _weights_problem(template, chosen, registries)
            if problem is not None:
                checks[reasons.VERSION_RESOLVED] = problem
                return resolved
            assert template.spec.image is not None
            resolved.weights = chosen.status.weights
            resolved.weights_registry = registries[chosen.spec.registry]
            registry_name = template.spec.image.registry
        elif chosen is not None and chosen.status is not None:
            resolved.image, registry_name = chosen.status.image, chosen.spec.registry
            resolved.version = chosen.spec.version
    elif template.spec.image is not None:
        registry_name = template.spec.image.registry
        checks[reasons.VERSION_RESOLVED] = passed(
            reasons.NOT_REQUIRED, "the template's image runs; the Model names no version"
        )
    else:
        checks[reasons.VERSION_RESOLVED] = failed(
            reasons.VERSION_REQUIRED,
            f"template {template.metadata.name} has no image, so the Model must name a "
            "ModelVersion in spec.version",
        )
    registry = registries.get(registry_name) if registry_name else None
    resolved.registry = registry
    if registry_name and registry is None:
        checks[reasons.VERSION_RESOLVED] = failed(
            reasons.REGISTRY_NOT_FOUND, f"Registry {registry_name} does not exist in this namespace"
        )
    if resolved.image is None and registry is not None and template.spec.image is not None:
        digest = template.status.resolved_digest if template.status else None
        if template.spec.image.tag and not digest and not allow_tag:
            # Never run a tag: what it points to can change under running workers.
            checks[reasons.VERSION_RESOLVED] = failed(
                reasons.IMAGE_UNRESOLVED,
                f"waiting for template {template.metadata.name} to pin the digest of tag "
                f"{template.spec.image.tag}",
            )
            return resolved
        # Offline (`modelyard render`, which may show a tag) nothing was checked, signatures
        # included; `modelyard verify` checks them.
        unsigned = None if allow_tag else _unsigned_template_image(template, registry)
        if unsigned is not None:
            checks[reasons.TEMPLATE_RESOLVED] = unsigned
            return resolved
        resolved.image = template_image_reference(template.spec.image, registry, digest)
    return resolved


def _fetched_files(
    template: ModelTemplate, version: ModelVersion, resolved: Resolved
) -> Check | None:
    """A version from MLflow in a template that loads files from its weights path: the files
    pinned at verification, fetched there and checked by an init step; not MLflow's URI. Why
    it cannot run, if it cannot."""
    assert template.spec.weights is not None
    assert version.status is not None and version.status.mlflow is not None
    files = version.status.mlflow.files
    if files is None:
        problem = version.status.mlflow.files_problem
        return failed(
            reasons.WEIGHTS_NOT_PINNED,
            f"template {template.metadata.name} loads a version's files from "
            f"{template.spec.weights.mount_path}, and ModelVersion {version.metadata.name}'s "
            "files are not pinned by content " + (f"({problem})" if problem else "yet"),
        )
    resolved.mlflow_files = files
    # The runtime reads the fetched files and gets nothing to reach MLflow with: the init step
    # alone holds the Registry's credentials.
    resolved.mlflow_access = tuple(item for item in resolved.env if item["name"] != "MODEL_URI")
    resolved.env = [{"name": "MODEL_URI", "value": template.spec.weights.mount_path}]
    return None


def _weights_problem(
    template: ModelTemplate, version: ModelVersion, registries: Mapping[str, Registry]
) -> Check | None:
    """Why a version of weights cannot run in this template, if it cannot."""
    if template.spec.image is None:
        return failed(
            reasons.IMAGE_REQUIRED,
            f"ModelVersion {version.metadata.name} holds weights, run by its template's image, "
            f"but template {template.metadata.name} has no image",
        )
    if template.spec.weights is None:
        return failed(
            reasons.WEIGHTS_PATH_REQUIRED,
            f"ModelVersion {version.metadata.name} holds weights, but template "
            f"{template.metadata.name} does not say where its runtime reads them "
            "(spec.weights.mountPath)",
        )
    if version.spec.registry not in registries:
        return failed(
            reasons.REGISTRY_NOT_FOUND,
            f"Registry {version.spec.registry} does not exist in this namespace",
        )
    return None


def _unsigned_template_image(template: ModelTemplate, registry: Registry) -> Check | None:
    """Why the template's image may not run under its Registry's Enforce policy, if it may
    not: its signature must have been verified for the template's current spec."""
    policy = registry.spec.signatures
    if policy is None or policy.mode is not SignatureMode.ENFORCE:
        return None
    status = template.status
    current = status is not None and status.observed_generation == template.metadata.generation
    signed = next(
        (c for c in (status.conditions if status else []) if c.type == reasons.SIGNED), None
    )
    if current and signed is not None and signed.status == ConditionStatus.TRUE:
        return None
    why = f"{signed.reason}: {signed.message}" if current and signed else "not checked yet"
    # Only a verdict on the signature itself stalls the Model (kstatus Stalled: Flux fails at
    # once); a check still to come, or one the registry could not answer, is a wait.
    definite = current and signed is not None and signed.reason in SIGNATURE_VERDICTS
    return failed(
        reasons.TEMPLATE_NOT_READY if definite else reasons.SIGNATURE_PENDING,
        f"ModelTemplate {template.metadata.name}'s image must be signed as Registry "
        f"{registry.metadata.name} requires: {why}",
    )


#: What a signature check decided, as opposed to why it could not decide.
SIGNATURE_VERDICTS = frozenset(
    {reasons.SIGNATURE_MISSING, reasons.SIGNATURE_INVALID, reasons.KEY_NOT_FOUND}
)
