"""`modelyard models`: what each Registry in the files holds, before anyone writes a ModelVersion.

For an OCI registry, the tags of the repositories that the ModelVersions and ModelTemplates in the
files name, each with the digest it points to now (what a ModelVersion pins). For an MLflow
registry, every registered model with its aliases and versions: number, status, run ID and
source. Credentials are found as `modelyard verify` finds them, with the operator's own clients.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from modelyard.api.v1alpha1 import Registry, RegistryType
from modelyard.registry import credentials as creds
from modelyard.registry.http import RegistryError, gather_limited
from modelyard.registry.oci import OciClient
from modelyard.verify import Inputs, client_for, mlflow_client_for, read_inputs


@dataclass
class Tag:
    tag: str
    digest: str | None


@dataclass
class Repository:
    repository: str
    tags: list[Tag] = field(default_factory=list)
    #: The repository does not exist in the registry.
    missing: bool = False


@dataclass
class Version:
    version: str
    status: str
    run_id: str | None
    source: str | None
    created_time: str | None
    aliases: list[str]


@dataclass
class Model:
    name: str
    aliases: dict[str, str]
    versions: list[Version]


@dataclass
class Listing:
    namespace: str
    name: str
    type: str
    url: str
    error: str | None = None
    repositories: list[Repository] = field(default_factory=list)
    models: list[Model] = field(default_factory=list)


def _repositories(registry: Registry, inputs: Inputs) -> list[str]:
    """The repositories of this registry that the files name."""
    namespace = registry.metadata.namespace or "default"
    named: set[str] = set()
    for version in inputs.versions:
        if (
            (version.metadata.namespace or "default") == namespace
            and version.spec.registry == registry.metadata.name
            and (published := version.spec.published()) is not None
        ):
            named.add(published[0])
    for template in inputs.templates:
        image = template.spec.image
        if (
            image is not None
            and (template.metadata.namespace or "default") == namespace
            and image.registry == registry.metadata.name
        ):
            named.add(image.repository)
    return sorted(named)


async def _oci(client: OciClient, listing: Listing, repositories: list[str]) -> None:
    for repository in repositories:
        tags = await client.tags(repository)
        if tags is None:
            listing.repositories.append(Repository(repository, missing=True))
            continue
        digests = await gather_limited([client.resolve(repository, tag) for tag in sorted(tags)])
        listing.repositories.append(
            Repository(repository, [Tag(t, d) for t, d in zip(sorted(tags), digests, strict=True)])
        )


async def list_registries(paths: list[str]) -> tuple[list[Listing], list[str]]:
    """One listing per Registry in the files, and every input problem."""
    inputs = read_inputs(paths, need_versions=False)
    if not inputs.registries and not inputs.errors:
        inputs.errors.append("no Registry found in the given files")
    listings = []
    for (namespace, name), registry in sorted(inputs.registries.items()):
        listing = Listing(namespace, name, registry.spec.type.value, registry.spec.url)
        listings.append(listing)
        try:
            if registry.spec.type is RegistryType.MLFLOW:
                async with mlflow_client_for(registry, inputs.secrets) as mlflow:
                    for model in await mlflow.models():
                        listing.models.append(
                            Model(
                                model.name,
                                model.aliases,
                                [
                                    Version(
                                        v.version,
                                        v.status,
                                        v.run_id,
                                        v.source,
                                        v.created_time,
                                        sorted(
                                            a for a, n in model.aliases.items() if n == v.version
                                        ),
                                    )
                                    for v in model.versions
                                ],
                            )
                        )
            else:
                async with client_for(registry, inputs.secrets) as client:
                    await _oci(client, listing, _repositories(registry, inputs))
        except creds.SecretInvalid as error:
            listing.error = f"SecretInvalid: {error}"
        except RegistryError as error:
            listing.error = f"{error.reason}: {error.message}"
    return listings, inputs.errors


def as_json(listings: list[Listing]) -> str:
    return json.dumps({"registries": [asdict(listing) for listing in listings]}, indent=2)


def as_text(listings: list[Listing]) -> str:
    lines: list[str] = []
    for listing in listings:
        lines.append(f"Registry {listing.namespace}/{listing.name} ({listing.type}, {listing.url})")
        if listing.error:
            lines.append(f"  FAIL {listing.error}")
            continue
        if listing.type == RegistryType.MLFLOW.value:
            if not listing.models:
                lines.append("  no registered models")
            for model in listing.models:
                aliases = ", ".join(f"{a} → {n}" for a, n in sorted(model.aliases.items()))
                lines.append(f"  {model.name}" + (f"  (aliases: {aliases})" if aliases else ""))
                lines.extend(_version_line(v) for v in model.versions)
            continue
        if not listing.repositories:
            lines.append("  no repository of this registry is named in the files")
        for repository in listing.repositories:
            if repository.missing:
                lines.append(f"  {repository.repository}: no such repository")
                continue
            lines.append(f"  {repository.repository}")
            width = max((len(t.tag) for t in repository.tags), default=0)
            lines.extend(
                f"    {t.tag:<{width}}  {t.digest or '(no digest)'}" for t in repository.tags
            )
    return "\n".join(lines)


def _version_line(version: Version) -> str:
    parts = [f"    {version.version:>4}  {version.status:<20}"]
    if version.run_id:
        parts.append(f"run {version.run_id}")
    if version.aliases:
        parts.append("aliases " + ",".join(version.aliases))
    if version.source:
        parts.append(version.source)
    return "  ".join(parts)


def exit_code(listings: list[Listing], errors: list[str]) -> int:
    return 1 if errors or any(listing.error for listing in listings) else 0


__all__ = ["Listing", "as_json", "as_text", "exit_code", "list_registries"]
