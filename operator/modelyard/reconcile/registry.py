"""One Registry, reconciled: can we reach it with its credentials, and which Secret do pods use.

The client built here (endpoint, CA, credentials) is kept per Registry and reused by every
ModelVersion and template that verifies against it, so a Secret is read once per change rather
than once per verification. When the user's Secret is not a dockerconfigjson (basic-auth or a
token), the operator writes a pull Secret owned by the Registry, because the kubelet only reads
dockerconfigjson Secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modelyard import metrics
from modelyard.api.v1alpha1 import API_VERSION, Registry, RegistryType
from modelyard.builders.images import pull_secret_name
from modelyard.kube import Kube
from modelyard.reconcile.common import describe, status_changed, warn_once
from modelyard.registry import credentials as creds
from modelyard.registry.egress import EgressPolicy
from modelyard.registry.http import Credentials, Endpoint, RegistryError
from modelyard.registry.mlflow import MlflowClient
from modelyard.registry.oci import OciClient
from modelyard.registry.signatures import (
    SignatureCheck,
    Trust,
    check_signatures,
    trust_of,
)
from modelyard.status import conditions, kstatus, reasons

logger = logging.getLogger(__name__)
Manifest = dict[str, Any]
Key = tuple[str, str]
COMPONENT = "modelyard"


@dataclass
class Connection:
    """A Registry as the other reconcilers use it: an OCI client, or an MLflow one (`mlflow`)."""

    client: OciClient
    fingerprint: str
    mlflow: MlflowClient | None = None
    ready: bool = False
    reason: str = ""
    message: str = ""
    check_interval: float = 300
    #: Content hash of the pull Secret last written, so it is written once, not every check.
    pull_secret_hash: str | None = None
    #: The Registry's signature policy, as far as its keys could be read; None without one.
    trust: Trust | None = None
    #: The last definite answer per (repository, digest), and when (time.monotonic()): what
    #: template passes reuse until the next check is due. Cleared when the policy changes.
    signature_checks: dict[tuple[str, str], tuple[SignatureCheck, float]] = field(
        default_factory=dict
    )

    def trust_with(self, trust: Trust | None) -> bool:
        """Adopt `trust`; whether it differs from the policy held until now."""
        before = self.trust.fingerprint if self.trust else None
        self.trust = trust
        changed = before != (trust.fingerprint if trust else None)
        if changed:
            self.signature_checks.clear()
        return changed

    async def check_signatures(
        self, repository: str, digest: str, *, reuse: bool = False
    ) -> SignatureCheck | None:
        """Is the image signed as the Registry's policy asks? None when it asks nothing.

        `reuse`: a definite answer younger than the check interval will do (template passes,
        which come with every change to their list of Models)."""
        if self.trust is None:
            return None
        key = (repository, digest)
        cached = self.signature_checks.get(key)
        if reuse and cached and time.monotonic() - cached[1] < self.check_interval:
            return cached[0]
        found = await check_signatures(
            self.client, repository, digest, self.trust.keys, self.trust.problems
        )
        metrics.SIGNATURE_CHECKS.labels(found.reason).inc()
        if not found.temporary:
            self.signature_checks[key] = (found, time.monotonic())
        elif cached is not None:
            # An outage does not undo what was found: the last definite answer stands.
            return cached[0]
        return found

    async def close(self) -> None:
        await self.client.close()
        if self.mlflow is not None:
            await self.mlflow.close()


@dataclass
class Connections:
    """Per-process cache of registry clients, keyed by (namespace, Registry name)."""

    by_key: dict[Key, Connection] = field(default_factory=dict)
    #: Where registries (and their redirects and token services) may send the operator.
    egress: EgressPolicy | None = None
    #: Why a Registry has no connection (its Secret is gone, refused or invalid), for the
    #: versions and templates that wait on it.
    problems: dict[Key, str] = field(default_factory=dict)

    def get(self, key: Key) -> Connection | None:
        return self.by_key.get(key)

    async def put(
        self, key: Key, endpoint: Endpoint, credentials: Credentials, kind: RegistryType
    ) -> Connection:
        fingerprint = hashlib.sha256(
            repr(
                (kind, endpoint, credentials.username, credentials.password, credentials.token)
            ).encode()
        ).hexdigest()
        self.problems.pop(key, None)
        current = self.by_key.get(key)
        if current is not None and current.fingerprint == fingerprint:
            return current
        if current is not None:
            await current.close()
        connection = Connection(
            OciClient(endpoint, credentials, egress=self.egress),
            fingerprint,
            MlflowClient(endpoint, credentials, egress=self.egress)
            if kind is RegistryType.MLFLOW
            else None,
        )
        if current is not None:
            connection.pull_secret_hash = current.pull_secret_hash
            connection.trust = current.trust
            connection.signature_checks = current.signature_checks
        self.by_key[key] = connection
        return connection

    async def drop(self, key: Key, problem: str | None = None) -> None:
        if problem is None:
            self.problems.pop(key, None)
        else:
            self.problems[key] = problem
        current = self.by_key.pop(key, None)
        if current is not None:
            await current.close()

    async def close(self) -> None:
        for key in list(self.by_key):
            await self.drop(key)


class _Problem(Exception):  # noqa: N818 -- a verdict, carried to the status
    def __init__(self, reason: str, message: str, purpose: str = "") -> None:
        super().__init__(message)
        self.reason, self.message, self.purpose = reason, message, purpose


async def _secret(kube: Kube, namespace: str | None, name: str, purpose: str) -> Manifest:
    secret = await kube.get("v1", "Secret", namespace, name)
    if secret is None:
        raise _Problem(
            reasons.SECRET_NOT_FOUND, f"Secret {name} ({purpose}) does not exist in this namespace"
        )
    if not creds.consents(secret):
        raise _Problem(reasons.SECRET_NOT_PERMITTED, creds.refusal(name, purpose), purpose)
    return secret


async def _ca(kube: Kube, registry: Registry) -> str | None:
    tls = registry.spec.tls
    if tls is None or tls.ca_secret is None:
        return None
    secret = await _secret(
        kube, registry.metadata.namespace, tls.ca_secret, "certificate authority"
    )
    raw = (secret.get("data") or {}).get("ca.crt")
    if raw is None:
        raise _Problem(reasons.SECRET_INVALID, f"Secret {tls.ca_secret} has no ca.crt key")
    try:
        return base64.b64decode(raw).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _Problem(
            reasons.SECRET_INVALID, f"Secret {tls.ca_secret}: ca.crt is not base64 text"
        ) from None


async def _trust(kube: Kube, registry: Registry) -> Trust | None:
    """The Registry's signature policy with the keys its (consenting) Secrets hold."""
    policy = registry.spec.signatures
    if policy is None:
        return None
    secrets: dict[str, Manifest | str] = {}
    for name in dict.fromkeys(reference.secret_name for reference in policy.public_keys):
        try:
            secrets[name] = await _secret(kube, registry.metadata.namespace, name, "public key")
        except _Problem as problem:
            secrets[name] = problem.message
    return trust_of(policy, secrets)


def _signatures_condition(trust: Trust | None) -> dict[str, conditions.Check]:
    if trust is None:
        return {}
    if trust.problems:
        return {
            reasons.SIGNATURES: conditions.failed(
                reasons.KEY_NOT_FOUND, f"{trust.describe()}; not read: {'; '.join(trust.problems)}"
            )
        }
    return {reasons.SIGNATURES: conditions.passed(reasons.KEYS_LOADED, trust.describe())}


async def _credentials(
    kube: Kube, registry: Registry, host: str
) -> tuple[Credentials, Manifest | None]:
    name = registry.spec.credentials_secret
    if name is None:
        return Credentials(), None
    secret = await _secret(kube, registry.metadata.namespace, name, "credentials")
    try:
        if registry.spec.type is RegistryType.MLFLOW:
            return creds.mlflow_from_secret(secret), secret
        return creds.from_secret(secret, host), secret
    except creds.SecretInvalid as error:
        raise _Problem(reasons.SECRET_INVALID, str(error)) from None


async def _pull_secret(
    kube: Kube,
    registry: Registry,
    *,
    body: Manifest,
    connection: Connection,
    credentials: Credentials,
    secret: Manifest | None,
) -> str | None:
    """The Secret pods pull with (`pull_secret_name`), written when it is ours."""
    if secret is None:
        return None
    name = pull_secret_name(registry, secret.get("type"))
    if name is None or name == registry.spec.credentials_secret:
        return name
    document = creds.docker_config(connection.client.endpoint.host, credentials)
    digest = hashlib.sha256(document.encode()).hexdigest()
    if connection.pull_secret_hash != digest:
        await kube.apply(_pull_secret_manifest(registry, body, name, document))
        connection.pull_secret_hash = digest
    return name


def _pull_secret_manifest(registry: Registry, body: Manifest, name: str, document: str) -> Manifest:
    """The pull Secret the operator writes for `registry`, holding `document`."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": creds.DOCKER_CONFIG,
        "metadata": {
            "name": name,
            "namespace": registry.metadata.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "modelyard",
                "modelyard.dev/registry": registry.metadata.name,
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Registry",
                    "name": registry.metadata.name,
                    "uid": body["metadata"].get("uid"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {".dockerconfigjson": base64.b64encode(document.encode()).decode()},
    }


async def _withdraw_pull_secret(
    kube: Kube, registry: Registry, body: Manifest, published: str | None
) -> None:
    """The credentials Secret no longer consents: the pull Secret is published no more (Models
    that pulled with the user's own Secret stop reading it, see `modelyard.reconcile.consent`),
    and the one the operator wrote from it is emptied — a copy of what the owner took back."""
    derived = f"{registry.metadata.name}-pull"
    if published == derived:
        await kube.apply(_pull_secret_manifest(registry, body, derived, '{"auths": {}}'))


@dataclass
class RegistryOutcome:
    connection: Connection | None
    ready: bool
    status: Manifest | None
    #: The signature policy's keys changed in this pass: what verified against it looks again.
    trust_changed: bool = False


async def reconcile_registry(
    body: Manifest, kube: Kube, connections: Connections
) -> RegistryOutcome:
    """Check the registry with its credentials; its connection (None if unusable) and status."""
    metadata = body.get("metadata") or {}
    key = (metadata.get("namespace") or "default", metadata.get("name", ""))
    previous: Manifest = dict(body.get("status") or {})
    connection: Connection | None = None
    pull_secret: str | None = None
    trust: Trust | None = None
    trust_changed = False
    try:
        registry = Registry.model_validate(body)
    except ValidationError as error:
        verdict = conditions.failed(reasons.INVALID_SPEC, describe(error))
        registry = None
    if registry is not None:
        endpoint = Endpoint(
            registry.spec.url,
            None,
            registry.spec.tls.insecure_skip_verify if registry.spec.tls else False,
        )
        try:
            # Read whatever else fails: the policy's keys (and the weights verified with them)
            # must not come and go with a credentials problem. It raises no _Problem.
            trust = await _trust(kube, registry)
            # Credentials first: their consent taken back must be seen whatever else is wrong.
            credentials, secret = await _credentials(kube, registry, endpoint.host)
            ca = await _ca(kube, registry)
            endpoint = Endpoint(registry.spec.url, ca, endpoint.insecure_skip_verify)
            connection = await connections.put(key, endpoint, credentials, registry.spec.type)
            connection.check_interval = registry.spec.check_interval_seconds
            trust_changed = connection.trust_with(trust)
            # Before the ping: the pull Secret follows from the credentials, not from whether
            # the registry answered just now. An outage must not change what pods pull with
            # (every Model on the registry would roll).
            pull_secret = await _pull_secret(
                kube,
                registry,
                body=body,
                connection=connection,
                credentials=credentials,
                secret=secret,
            )
            with metrics.REGISTRY_CHECK_SECONDS.time():
                if connection.mlflow is not None:
                    await connection.mlflow.ping()
                else:
                    await connection.client.ping()
            verdict = conditions.passed(
                reasons.REACHABLE, f"{endpoint.host} answers with the given credentials"
            )
        except _Problem as problem:
            verdict = conditions.failed(problem.reason, problem.message)
            # Nothing verifies with credentials that are gone or refused; what pods pull with
            # stays as it was, so the Models that run are not rolled for it.
            await connections.drop(key, f"{problem.reason}: {problem.message}")
            connection = None
            pull_secret = previous.get("pullSecret")
            if problem.reason == reasons.SECRET_NOT_PERMITTED and problem.purpose == "credentials":
                # Consent taken back: pods stop pulling with what came from the Secret.
                await _withdraw_pull_secret(kube, registry, body, pull_secret)
                pull_secret = None
        except RegistryError as error:
            verdict = conditions.failed(error.reason, error.message)
        if not verdict.ok:
            metrics.REGISTRY_CHECK_FAILURES.labels(verdict.reason).inc()
    if connection is not None:
        connection.ready, connection.reason, connection.message = (
            verdict.ok,
            verdict.reason,
            verdict.message,
        )
    written = await _write_status(
        body, previous, verdict, trust=trust, pull_secret=pull_secret, kube=kube
    )
    return RegistryOutcome(connection, verdict.ok, written, trust_changed)


async def _write_status(
    body: Manifest,
    previous: Manifest,
    verdict: conditions.Check,
    *,
    trust: Trust | None,
    pull_secret: str | None,
    kube: Kube,
) -> Manifest | None:
    """Write the Registry's status if it changed (the object as written), with an Event when
    its Ready reason changes, and a Warning once per cause while a key cannot be read."""
    metadata = body.get("metadata") or {}
    status: Manifest = {
        "conditions": conditions.merge(
            previous.get("conditions"),
            kstatus.from_ready(
                {**_signatures_condition(trust), reasons.READY: verdict}, reasons.PERMANENT
            ),
            metadata.get("generation"),
        ),
        "observedGeneration": metadata.get("generation"),
        "pullSecret": pull_secret,
        # The keys model-signing verifies weights with (ECDSA) and that workers carry.
        "publicKeys": [key.pem() for key in trust.keys if key.algorithm.startswith("ECDSA")]
        if trust is not None
        else None,
        # Written when something else changes, so an idle registry costs no writes.
        "lastCheckTime": previous.get("lastCheckTime"),
    }
    if not status_changed(previous, status):
        return None
    status["lastCheckTime"] = conditions.now()
    written = await kube.patch_status(
        API_VERSION, "Registry", metadata.get("namespace"), metadata["name"], status
    )
    before = conditions.find(previous.get("conditions"), reasons.READY) or {}
    if before.get("reason") != verdict.reason:
        (logger.info if verdict.ok else logger.warning)(
            "Registry %s/%s: %s: %s",
            metadata.get("namespace"),
            metadata.get("name"),
            verdict.reason,
            verdict.message,
        )
        await kube.post_event(
            body, "Normal" if verdict.ok else "Warning", verdict.reason, verdict.message, COMPONENT
        )
    await warn_once(
        kube,
        body,
        previous.get("conditions"),
        reasons.SIGNATURES,
        _signatures_condition(trust).get(reasons.SIGNATURES),
    )
    return written
