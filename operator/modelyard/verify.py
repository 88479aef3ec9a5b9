"""`modelyard verify`: check published versions against their registry before anyone applies them.

Model owners run it in the pipeline that pushes an image: it reads Registry, Secret and
ModelVersion manifests from files and verifies each version with the operator's own code
(`modelyard.registry.verify`), so "verify passed" means "the operator will find it verified".
A Registry with a signature policy has each image's cosign signatures checked with the keys of
its Secrets in the files (or `--key FILE`, which checks every image with the keys given).
Credentials come from a Secret manifest in the files, else from $MODELYARD_REGISTRY_USERNAME and
$MODELYARD_REGISTRY_PASSWORD, else (OCI) from the Docker config (`docker login`) or (MLflow) from
MLflow's own $MLFLOW_TRACKING_USERNAME / $MLFLOW_TRACKING_PASSWORD / $MLFLOW_TRACKING_TOKEN; a
private CA from the caSecret manifest or $MODELYARD_REGISTRY_CA (a file).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelyard.api.errors import describe_validation_error
from modelyard.api.v1alpha1 import (
    API_VERSION,
    ModelTemplate,
    ModelVersion,
    Registry,
    RegistryType,
    parse,
)
from modelyard.registry import credentials as creds
from modelyard.registry.http import Credentials, Endpoint, RegistryError, gather_limited
from modelyard.registry.mlflow import MlflowClient
from modelyard.registry.oci import OciClient
from modelyard.registry.signatures import (
    KeyInvalid,
    Trust,
    TrustedKey,
    check_signatures,
    load_key,
)
from modelyard.registry.verify import Verification, verify, verify_mlflow
from modelyard.registry.weights import check_shape
from modelyard.render import load_documents, trust_from_files
from modelyard.status import reasons


@dataclass(frozen=True)
class Line:
    ok: bool
    text: str


def _env_credentials(host: str, kind: RegistryType = RegistryType.OCI) -> Credentials:
    username = os.environ.get("MODELYARD_REGISTRY_USERNAME")
    password = os.environ.get("MODELYARD_REGISTRY_PASSWORD")
    if username or password:
        return Credentials(username, password)
    if kind is RegistryType.MLFLOW:
        username = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if username and password:
            return Credentials(username, password)
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        return Credentials(token=token) if token else Credentials()
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    if config.is_file():
        secret = {
            "metadata": {"name": str(config)},
            "type": creds.DOCKER_CONFIG,
            "data": {".dockerconfigjson": base64.b64encode(config.read_bytes()).decode()},
        }
        try:
            return creds.from_secret(secret, host)
        except creds.SecretInvalid:
            return Credentials()
    return Credentials()


def _ca(registry: Registry, secrets: dict[tuple[str, str], dict[str, Any]]) -> str | None:
    namespace = registry.metadata.namespace or "default"
    if registry.spec.tls and registry.spec.tls.ca_secret:
        secret = secrets.get((namespace, registry.spec.tls.ca_secret))
        if secret is None:
            raise creds.SecretInvalid(
                f"CA Secret {registry.spec.tls.ca_secret} is not among the files"
            )
        data = (secret.get("data") or {}).get("ca.crt")
        text = (secret.get("stringData") or {}).get("ca.crt")
        if text is None and data is None:
            raise creds.SecretInvalid(f"Secret {registry.spec.tls.ca_secret} has no ca.crt key")
        return str(text) if text is not None else base64.b64decode(str(data)).decode()
    path = os.environ.get("MODELYARD_REGISTRY_CA")
    return Path(path).read_text() if path else None


@dataclass
class Inputs:
    registries: dict[tuple[str, str], Registry] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    versions: list[ModelVersion] = field(default_factory=list)
    templates: list[ModelTemplate] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_inputs(paths: list[str], *, need_versions: bool = True) -> Inputs:
    inputs = Inputs()
    for document in load_documents(paths, inputs.errors):
        body = document.body
        namespace = (body.get("metadata") or {}).get("namespace") or "default"
        if body.get("apiVersion") == "v1" and body.get("kind") == "Secret":
            inputs.secrets[(namespace, body["metadata"]["name"])] = body
            continue
        if body.get("apiVersion") != API_VERSION or body.get("kind") not in (
            "Registry",
            "ModelVersion",
            "ModelTemplate",
        ):
            continue
        try:
            resource = parse(body)
        except ValidationError as error:
            inputs.errors.append(f"{document.label}: {describe_validation_error(error)}")
            continue
        except ValueError as error:
            inputs.errors.append(f"{document.label}: {error}")
            continue
        if isinstance(resource, Registry):
            inputs.registries[(namespace, resource.metadata.name)] = resource
        elif isinstance(resource, ModelVersion):
            inputs.versions.append(resource)
        elif isinstance(resource, ModelTemplate):
            inputs.templates.append(resource)
    if need_versions and not inputs.versions and not inputs.errors:
        inputs.errors.append("no ModelVersion found in the given files")
    return inputs


def connect(
    registry: Registry, secrets: dict[tuple[str, str], dict[str, Any]]
) -> tuple[Endpoint, Credentials]:
    """Where and how the operator would connect; raises SecretInvalid."""
    namespace = registry.metadata.namespace or "default"
    insecure = bool(registry.spec.tls and registry.spec.tls.insecure_skip_verify)
    endpoint = Endpoint(registry.spec.url, _ca(registry, secrets), insecure)
    secret_name = registry.spec.credentials_secret
    if secret_name and (namespace, secret_name) in secrets:
        secret = secrets[(namespace, secret_name)]
        if registry.spec.type is RegistryType.MLFLOW:
            return endpoint, creds.mlflow_from_secret(secret)
        return endpoint, creds.from_secret(secret, endpoint.host)
    return endpoint, _env_credentials(endpoint.host, registry.spec.type)


def client_for(registry: Registry, secrets: dict[tuple[str, str], dict[str, Any]]) -> OciClient:
    """The same client the operator would build; raises SecretInvalid."""
    return OciClient(*connect(registry, secrets))


def mlflow_client_for(
    registry: Registry, secrets: dict[tuple[str, str], dict[str, Any]]
) -> MlflowClient:
    return MlflowClient(*connect(registry, secrets))


def trust_from_key_files(paths: list[str]) -> Trust:
    """`--key FILE`: these keys, enforced, for every version in place of the manifests'."""
    keys: list[TrustedKey] = []
    problems: list[str] = []
    for path in paths:
        try:
            keys.append(load_key(path, Path(path).read_bytes()))
        except OSError as error:
            problems.append(f"{path}: {error.strerror or error}")
        except KeyInvalid as error:
            problems.append(str(error))
    return Trust(True, tuple(keys), tuple(problems))


async def verify_files(
    paths: list[str], key_files: list[str] | None = None
) -> tuple[list[Line], list[str]]:
    """One line per ModelVersion (and per template whose image must be signed), and every input
    problem. `key_files`: check every image's signatures with these keys instead of its
    Registry's policy."""
    inputs = read_inputs(paths, need_versions=False)
    keys = trust_from_key_files(key_files) if key_files else None
    if keys is not None:
        inputs.errors.extend(keys.problems)
    clients: dict[tuple[str, str], OciClient] = {}
    mlflow_clients: dict[tuple[str, str], MlflowClient] = {}

    async def check(version: ModelVersion) -> Line:
        namespace = version.metadata.namespace or "default"
        label = f"{namespace}/{version.metadata.name} ({version.spec.model} {version.spec.version})"
        key = (namespace, version.spec.registry)
        registry = inputs.registries.get(key)
        if registry is None:
            return Line(
                False, f"FAIL {label}: Registry {version.spec.registry} is not among the files"
            )
        if (registry.spec.type is RegistryType.MLFLOW) != (version.spec.mlflow is not None):
            return Line(
                False,
                f"FAIL {label}: RegistryMismatch: Registry {registry.metadata.name} is of type "
                f"{registry.spec.type.value}, which does not hold this kind of version",
            )
        try:
            if version.spec.mlflow is not None and key not in mlflow_clients:
                mlflow_clients[key] = mlflow_client_for(registry, inputs.secrets)
            elif version.spec.mlflow is None and key not in clients:
                clients[key] = client_for(registry, inputs.secrets)
        except creds.SecretInvalid as error:
            return Line(False, f"FAIL {label}: SecretInvalid: {error}")
        spec = version.spec
        if spec.mlflow is not None:
            found = await verify_mlflow(
                mlflow_clients[key],
                spec.mlflow.name,
                version=spec.mlflow.version,
                alias=spec.mlflow.alias,
            )
            if found.verified:
                return Line(True, f"ok   {label}: {found.message}")
            return Line(False, f"FAIL {label}: {found.reason}: {found.message}")
        client = clients[key]
        published = spec.published()
        assert published is not None
        repository, digest, tag = published
        result: Verification = await verify(client, repository, digest, tag)
        if not result.verified:
            return Line(False, f"FAIL {label}: {result.reason}: {result.message}")
        if spec.weights is not None:
            try:
                problem = await check_shape(client, repository, digest)
            except RegistryError as error:
                return Line(False, f"FAIL {label}: {error.reason}: {error.message}")
            if problem is not None:
                return Line(
                    False,
                    f"FAIL {label}: {reasons.WEIGHTS_NOT_MOUNTABLE}: {repository}@{digest} is "
                    f"{problem}",
                )
        trust = keys if keys is not None else trust_from_files(registry, inputs.secrets)
        return await _signature_line(label, client, repository, digest, trust)

    signed_templates = _templates_to_check(inputs, keys)
    if not inputs.versions and not signed_templates and not inputs.errors:
        inputs.errors.append("no ModelVersion found in the given files")
    try:
        lines = await gather_limited(
            [
                *(check(v) for v in inputs.versions),
                *(_check_template(t, inputs, clients, keys) for t in signed_templates),
            ]
        )
    finally:
        for client in clients.values():
            await client.close()
        for mlflow_client in mlflow_clients.values():
            await mlflow_client.close()
    return lines, inputs.errors


async def _check_template(
    template: ModelTemplate,
    inputs: Inputs,
    clients: dict[tuple[str, str], OciClient],
    keys: Trust | None,
) -> Line:
    """A template's image under a signature policy (or --key): by digest, or by the digest
    its tag points to now, as the operator would pin it."""
    image = template.spec.image
    assert image is not None
    namespace = template.metadata.namespace or "default"
    label = f"{namespace}/{template.metadata.name} (template)"
    key = (namespace, image.registry)
    registry = inputs.registries[key]
    try:
        if key not in clients:
            clients[key] = client_for(registry, inputs.secrets)
        digest = image.digest or await clients[key].resolve(image.repository, image.tag or "")
    except creds.SecretInvalid as error:
        return Line(False, f"FAIL {label}: SecretInvalid: {error}")
    except RegistryError as error:
        return Line(False, f"FAIL {label}: {error.reason}: {error.message}")
    if digest is None:
        return Line(
            False,
            f"FAIL {label}: TagNotFound: {clients[key].endpoint.host}/{image.repository} "
            f"has no tag {image.tag}",
        )
    trust = keys if keys is not None else trust_from_files(registry, inputs.secrets)
    return await _signature_line(label, clients[key], image.repository, digest, trust)


def _templates_to_check(inputs: Inputs, keys: Trust | None) -> list[ModelTemplate]:
    """The templates whose image must be signed: their Registry (among the files) has a
    signature policy, or --key asks it of every image."""
    found = []
    for template in inputs.templates:
        if template.spec.image is None:
            continue
        namespace = template.metadata.namespace or "default"
        registry = inputs.registries.get((namespace, template.spec.image.registry))
        if registry is None or registry.spec.type is not RegistryType.OCI:
            continue
        if keys is not None or registry.spec.signatures is not None:
            found.append(template)
    return found


async def _signature_line(
    label: str, client: OciClient, repository: str, digest: str, trust: Trust | None
) -> Line:
    """The line for an image whose digest is there: its signer, or why it has none."""
    image = f"{client.endpoint.host}/{repository}@{digest}"
    if trust is None:
        return Line(True, f"ok   {label}: {image}")
    signed = await check_signatures(client, repository, digest, trust.keys, trust.problems)
    if signed.verified:
        return Line(True, f"ok   {label}: {image} signed by {signed.signer}")
    if not trust.enforce:
        # The operator runs it (Warn mode) and says so; so does this line.
        return Line(True, f"warn {label}: {signed.reason}: {signed.message}")
    return Line(False, f"FAIL {label}: {signed.reason}: {signed.message}")


def summary(lines: list[Line]) -> str:
    failed = sum(1 for line in lines if not line.ok)
    return json.dumps({"verified": len(lines) - failed, "failed": failed})
