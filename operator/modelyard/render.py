"""`modelyard render`: the objects the operator would create, computed offline from manifests.

It runs the operator's own planning code (`modelyard.builders.plan`) on what it reads from files,
so a platform team can review a template change, or a CI pipeline can diff it, without a
cluster — the way `helm template` is used. What needs a cluster is assumed instead:
ModelVersions read from files count as verified (their spec digest is used); a template image
given by tag is shown by tag (the operator pins it to the digest the tag resolves to), and its
signatures are not checked (`modelyard verify` does); a Registry's pull Secret is the one the
operator would publish; every Secret a parameter names counts as consenting; KEDA counts as
installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelyard.api.errors import describe_validation_error
from modelyard.api.types import Condition, ConditionStatus, Resource
from modelyard.api.v1alpha1 import (
    API_VERSION,
    MlflowFiles,
    MlflowResolution,
    Model,
    ModelTemplate,
    ModelVersion,
    ModelVersionStatus,
    Registry,
    RegistryStatus,
    parse,
)
from modelyard.builders import external as external_children
from modelyard.builders.images import image_host, pull_secret_name
from modelyard.builders.plan import check_template, plan_model
from modelyard.config import OperatorConfig
from modelyard.registry.signatures import Trust, trust_of
from modelyard.status import reasons
from modelyard.status.conditions import now

YAML_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Document:
    source: str
    index: int
    body: dict[str, Any]

    @property
    def label(self) -> str:
        metadata = self.body.get("metadata") or {}
        name = metadata.get("name", "?") if isinstance(metadata, dict) else "?"
        return f"{self.source}: {self.body.get('kind', '?')} {name}"


@dataclass
class Rendered:
    """The manifests to print, with the document each came from, and every problem found."""

    manifests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _files(paths: Iterable[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file()
            )
        else:
            yield path


def load_documents(paths: Iterable[str], errors: list[str]) -> list[Document]:
    """Every YAML document in the given files and directories, in a stable order."""
    documents = []
    for path in _files(paths):
        try:
            text = path.read_text(encoding="utf-8")
            loaded = list(yaml.safe_load_all(text))
        except (OSError, UnicodeDecodeError) as error:
            errors.append(f"{path}: cannot read: {error}")
            continue
        except yaml.YAMLError as error:
            errors.append(f"{path}: not valid YAML: {error}")
            continue
        for index, body in enumerate(loaded):
            if body is None:
                continue
            if not isinstance(body, dict):
                errors.append(f"{path}: document {index + 1} is not a mapping")
                continue
            documents.append(Document(str(path), index, body))
    return documents


def _assume_verified(version: ModelVersion, registries: dict[str, Registry]) -> ModelVersion:
    """Offline, a version's own spec digest stands in for the registry's verdict. A version from
    MLflow given by alias cannot be pinned offline: it renders as MLflow's own alias URI
    (`models:/<name>@<alias>`), where the operator puts the number the alias points to; its
    files, which the operator pins by content, render as an empty list."""
    registry = registries.get(version.spec.registry)
    if registry is None:
        return version
    image: str | None = None
    weights: str | None = None
    mlflow: MlflowResolution | None = None
    source = version.spec.mlflow
    if source is not None:
        number = source.version or f"@{source.alias}"
        uri = (
            f"models:/{source.name}/{source.version}"
            if source.version
            else f"models:/{source.name}@{source.alias}"
        )
        # Its files are pinned by content at verification; offline, only their place shows.
        unknown = "(pinned at verification)"
        mlflow = MlflowResolution(
            version=number, model_uri=uri, files=MlflowFiles(artifacts=unknown, digest=unknown)
        )
    elif version.spec.weights is not None:
        files = version.spec.weights
        weights = f"{image_host(registry)}/{files.repository}@{files.digest}"
    else:
        image = f"{image_host(registry)}/{version.spec.repository}@{version.spec.digest}"
    status = ModelVersionStatus(
        conditions=[
            Condition(
                type=reasons.READY,
                status=ConditionStatus.TRUE,
                reason="AssumedVerified",
                last_transition_time=now(),
            )
        ],
        image=image,
        mlflow=mlflow,
        weights=weights,
    )
    return version.model_copy(update={"status": status})


def trust_from_files(
    registry: Registry, secrets: dict[tuple[str, str], dict[str, Any]]
) -> Trust | None:
    """The Registry's signature policy with the keys of its Secrets among the files; None
    when it has no policy."""
    policy = registry.spec.signatures
    if policy is None:
        return None
    namespace = registry.metadata.namespace or "default"
    found: dict[str, dict[str, Any] | str] = {
        reference.secret_name: secrets.get(
            (namespace, reference.secret_name),
            f"Secret {reference.secret_name} is not among the files",
        )
        for reference in policy.public_keys
    }
    return trust_of(policy, found)


def _assume_checked(registry: Registry, secrets: dict[tuple[str, str], dict[str, Any]]) -> Registry:
    """Offline, a Registry publishes what the operator would: the pull Secret, decided by its
    credentials Secret's type when that Secret is among the files, else the operator's own;
    and its policy's ECDSA public keys, read from the key Secrets among the files."""
    namespace = registry.metadata.namespace or "default"
    credentials = secrets.get((namespace, registry.spec.credentials_secret or "")) or {}
    name = pull_secret_name(
        registry, str(credentials.get("type") or "Opaque") if credentials else None
    )
    trust = trust_from_files(registry, secrets)
    if name is None and trust is None:
        return registry
    keys = [k.pem() for k in trust.keys if k.algorithm.startswith("ECDSA")] if trust else []
    # As the Registry's Signatures condition would say: every key read, or not.
    read = (
        [
            Condition(
                type=reasons.SIGNATURES,
                status=ConditionStatus.FALSE if trust.problems else ConditionStatus.TRUE,
                reason=reasons.KEY_NOT_FOUND if trust.problems else reasons.KEYS_LOADED,
                message=trust.describe(),
                last_transition_time=now(),
            )
        ]
        if trust is not None
        else []
    )
    status = RegistryStatus(
        pull_secret=name,
        public_keys=keys,
        conditions=read,
        observed_generation=registry.metadata.generation,
    )
    return registry.model_copy(update={"status": status})


def render(paths: Iterable[str], config: OperatorConfig) -> Rendered:
    result = Rendered()
    typed: list[tuple[Document, Resource]] = []
    secrets: dict[tuple[str, str], dict[str, Any]] = {}
    for document in load_documents(paths, result.errors):
        body = document.body
        if body.get("apiVersion") == "v1" and body.get("kind") == "Secret":
            metadata = body.get("metadata") or {}
            key = (str(metadata.get("namespace") or "default"), str(metadata.get("name")))
            secrets[key] = body
        if body.get("apiVersion") != API_VERSION:
            continue  # Secrets and other kinds ride along in the same files
        try:
            typed.append((document, parse(body)))
        except ValidationError as error:
            result.errors.append(f"{document.label}: {describe_validation_error(error)}")
        except ValueError as error:
            result.errors.append(f"{document.label}: {error}")

    def namespaced(resource: Resource) -> tuple[str, str]:
        return resource.metadata.namespace or "default", resource.metadata.name

    registries = {
        namespaced(r): _assume_checked(r, secrets) for _, r in typed if isinstance(r, Registry)
    }
    if config.weights_verifier_image is None:
        # What the chart configures: the operator's own image.
        config = config.model_copy(update={"weights_verifier_image": CHART_VERIFIER_IMAGE})
    templates = {namespaced(r): r for _, r in typed if isinstance(r, ModelTemplate)}
    for document, template in ((d, r) for d, r in typed if isinstance(r, ModelTemplate)):
        verdict = check_template(template, config)
        if not verdict.ok:
            result.errors.append(f"{document.label}: {verdict.reason}: {verdict.message}")
        image = template.spec.image
        if image is not None and image.tag is not None:
            result.notes.append(
                f"{document.label}: image given by tag {image.tag!r}; the operator runs the "
                "digest it resolves to"
            )

    for document, model in ((d, r) for d, r in typed if isinstance(r, Model)):
        namespace = model.metadata.namespace or "default"
        source = f"{document.source} (Model {namespace}/{model.metadata.name})"
        if model.spec.external is not None:
            service = external_children.service(model)
            if service is None:
                result.notes.append(
                    f"{document.label}: external model at an IP address: no Service, clients "
                    f"use {model.spec.external.url}"
                )
            else:
                result.manifests.append((source, service))
            continue
        assert model.spec.template is not None
        local_registries = {n: r for (ns, n), r in registries.items() if ns == namespace}
        versions = [
            _assume_verified(r, local_registries)
            for _, r in typed
            if isinstance(r, ModelVersion) and (r.metadata.namespace or "default") == namespace
        ]
        plan = plan_model(
            model,
            templates.get((namespace, model.spec.template)),
            local_registries,
            versions,
            config,
            allow_tag=True,
        )
        if plan.blocking is not None or plan.children is None:
            blocking = plan.blocking
            detail = f"{blocking.reason}: {blocking.message}" if blocking else "nothing to render"
            result.errors.append(f"{document.label}: {detail}")
            continue
        result.manifests.extend((source, manifest) for manifest in plan.children.manifests)
    return result


#: The chart's default verifier, the operator's image of this release (offline stand-in for
#: `weightsVerifierImage` when the configuration names none).
CHART_VERIFIER_IMAGE = f"ghcr.io/modelyard/modelyard:{package_version('modelyard')}"


def to_yaml(rendered: Rendered) -> str:
    chunks = []
    for source, manifest in rendered.manifests:
        body = yaml.safe_dump(manifest, sort_keys=False, width=100)
        chunks.append(f"---\n# Source: {source}\n{body}")
    return "".join(chunks)
