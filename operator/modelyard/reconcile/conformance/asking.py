"""Asking one Target once: health, the classes the server offers, the probe, each answer
checked against its model type's contract (`modelyard.api.contracts`). Every failure becomes
a `Verdict` with a reason, never an exception: the verdict is what the status shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelyard.api import contracts
from modelyard.kube import ApiError, Kube
from modelyard.reconcile.conformance.protocols import ASKERS, refused
from modelyard.reconcile.conformance.targets import Target
from modelyard.registry import credentials
from modelyard.registry.egress import EgressPolicy, NotPermitted
from modelyard.registry.endpoint import Endpoint, ModelEndpoint
from modelyard.registry.http import Failure, RegistryError
from modelyard.status import reasons
from modelyard.status.conditions import Check, failed, passed


@dataclass(frozen=True)
class Verdict:
    fingerprint: str
    #: Whether the server answers at all (external Models: their Available condition).
    available: Check
    #: Whether the probe's answer conforms; None without a probe.
    conformant: Check | None = None
    #: The classes the server offers, when none are registered and it was asked.
    classes: tuple[str, ...] | None = None
    #: What the server says of the model, in its protocol's words (DEEPaaS, OpenInference).
    server: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.available.ok and (self.conformant is None or self.conformant.ok)


class _Unanswered(Exception):  # noqa: N818 -- a verdict, carried to the status
    def __init__(self, check: Check) -> None:
        super().__init__(check.message)
        self.check = check


async def _secret_value(kube: Kube, namespace: str, name: str, key: str, purpose: str) -> str:
    secret = await kube.get("v1", "Secret", namespace, name)
    if secret is None:
        raise _Unanswered(
            failed(
                reasons.SECRET_NOT_FOUND,
                f"Secret {name} ({purpose}) does not exist in this namespace",
            )
        )
    if not credentials.consents(secret):
        raise _Unanswered(failed(reasons.SECRET_NOT_PERMITTED, credentials.refusal(name, purpose)))
    try:
        value = (credentials.secret_text(secret, key) or "").strip()
    except credentials.SecretInvalid:
        value = ""
    if not value:
        raise _Unanswered(
            failed(reasons.SECRET_INVALID, f"Secret {name} has no readable {key} key")
        )
    return value


async def _client(kube: Kube, target: Target, policy: EgressPolicy | None) -> ModelEndpoint:
    headers = {}
    if target.credential is not None:
        credential = target.credential
        value = await _secret_value(
            kube, target.namespace, credential.secret, credential.key, "credentials"
        )
        scheme = credential.scheme
        if scheme is None and credential.header.lower() == "authorization":
            scheme = "Bearer"
        headers[credential.header] = f"{scheme} {value}" if scheme else value
    ca_pem = None
    if target.ca_secret:
        ca_pem = await _secret_value(
            kube, target.namespace, target.ca_secret, "ca.crt", "certificate authority"
        )
    endpoint = Endpoint(
        target.url,
        ca_pem=ca_pem,
        insecure_skip_verify=target.insecure_skip_verify,
        timeout=target.timeout,
    )
    egress = policy if target.external else None
    return ModelEndpoint(endpoint, headers=headers, egress=egress)


def _unreachable(error: RegistryError) -> Check:
    reason = {
        Failure.TLS_ERROR: reasons.TLS_ERROR,
        Failure.UNAUTHORIZED: reasons.UNAUTHORIZED,
        Failure.REDIRECTED: reasons.ENDPOINT_NOT_PERMITTED,
    }.get(error.reason, reasons.ENDPOINT_UNREACHABLE)
    return failed(reason, error.message)


async def _health(client: ModelEndpoint, target: Target) -> Check:
    """An external server's health: its health path's 2xx, or, without one, any answer but a
    refusal (401, 403) or a server error (5xx)."""
    path = target.health_path or ""
    url = client.url(path)
    answer = await client.get(path)
    if target.health_path is None:
        if answer.status in (401, 403) or answer.status >= 500:
            return refused("GET", url, answer) or failed(reasons.ENDPOINT_ERROR, url)
        return passed(reasons.ANSWERING, f"{url} answers")
    return refused("GET", url, answer) or passed(reasons.ANSWERING, f"GET {url} answered 2xx")


async def _offered_classes(client: ModelEndpoint, target: Target) -> tuple[str, ...] | Check:
    """The classes the server lists at its classes path, or what is wrong with them: not a
    list of strings, or without a class the Model registered."""
    assert target.classes_path is not None
    url = client.url(target.classes_path)
    answer = await client.get(target.classes_path)
    problem = refused("GET", url, answer)
    if problem is not None:
        return problem
    offered = answer.body
    if (
        answer.not_json is not None
        or not isinstance(offered, list)
        or not all(isinstance(c, str) for c in offered)
    ):
        return failed(
            reasons.CLASSES_MISMATCH, f"GET {url}: the answer is not a JSON list of class names"
        )
    missing = [c for c in target.classes if c not in offered]
    if missing:
        return failed(
            reasons.CLASSES_MISMATCH,
            f"GET {url}: the server does not offer the registered classes {', '.join(missing)} "
            f"(it offers {', '.join(offered) or 'none'})",
        )
    return tuple(offered)


async def _conformance(
    client: ModelEndpoint, target: Target, classes: tuple[str, ...] = ()
) -> Check:
    """The probe's answer judged: its type's schema, and an image classifier's status and
    labels (against `classes`: the registered ones, else the server's own)."""
    assert target.probe_path is not None and target.probe_request is not None
    request = json.loads(target.probe_request)
    url = client.url(target.probe_path)
    answer = await client.post(target.probe_path, request)
    problem = refused("POST", url, answer)
    if problem is not None:
        return problem
    if answer.not_json is not None:
        return failed(
            reasons.SCHEMA_MISMATCH, f"POST {url}: the answer is not JSON ({answer.not_json})"
        )
    found = contracts.check_answer(target.model_type, request, answer.body)
    if found:
        return failed(
            reasons.SCHEMA_MISMATCH,
            f"POST {url}: the answer is not a {target.model_type} response: " + "; ".join(found),
        )
    words = contracts.inference_failure(target.model_type, answer.body)
    if words is not None:
        return failed(reasons.INFERENCE_FAILED, f"POST {url}: {words}")
    judged = target.classes or classes
    unknown = contracts.unknown_labels(target.model_type, answer.body, judged)
    if unknown:
        return failed(
            reasons.SCHEMA_MISMATCH,
            f"POST {url}: label {', '.join(unknown)} is not one of the model's classes "
            f"({', '.join(judged)})",
        )
    return passed(reasons.CONFORMANT, f"POST {url} answered a valid {target.model_type} response")


def _unanswered(target: Target, check: Check) -> Verdict:
    """No answer to judge: a Model run here has only its probe to fail, an external one is
    simply not available (its probe waits for the server)."""
    if target.external:
        return Verdict(target.fingerprint, check)
    return Verdict(target.fingerprint, check, check)


async def ask(kube: Kube, target: Target, policy: EgressPolicy | None = None) -> Verdict:
    """Ask the model once; every failure becomes a verdict, none is raised.

    An external target is checked against the egress `policy` first: a URL it refuses is
    never asked, and the Model says why (no answer, status or timing leaks back)."""
    fingerprint = target.fingerprint
    try:
        if policy is not None and target.external:
            try:
                await policy.check(target.url)
            except NotPermitted as refusal:
                return _unanswered(
                    target,
                    failed(
                        reasons.ENDPOINT_NOT_PERMITTED,
                        f"{target.url} is not asked: {refusal}; the operator's externalModels "
                        "policy decides where external Models may point",
                    ),
                )
        async with await _client(kube, target, policy) as client:
            if target.external and (target.health_path or target.probe_path is None):
                available = await _health(client, target)
                if not available.ok or target.probe_path is None:
                    return Verdict(fingerprint, available)
            offered: tuple[str, ...] | None = None
            if target.classes_path is not None:
                listed = await _offered_classes(client, target)
                if isinstance(listed, Check):
                    answering = passed(reasons.ANSWERING, f"{target.url} answers")
                    if listed.reason != reasons.CLASSES_MISMATCH:
                        answering = listed
                    return Verdict(fingerprint, answering, listed)
                offered = None if target.classes else listed
            if target.probe_path is None:
                return Verdict(
                    fingerprint,
                    passed(reasons.ANSWERING, f"{target.url} answers"),
                    passed(reasons.CONFORMANT, "the server offers the registered classes"),
                    offered,
                )
            server: dict[str, Any] | None = None
            asker = ASKERS.get(target.protocol)
            if asker is not None:
                conformant, server = await asker(client, target)
            else:
                conformant = await _conformance(client, target, offered or ())
    except _Unanswered as problem:
        return _unanswered(target, problem.check)
    except RegistryError as error:
        return _unanswered(target, _unreachable(error))
    except ApiError as error:
        # The Secret could not be read now (the API server): asked again soon.
        return _unanswered(target, failed(reasons.API_ERROR, f"reading the Secret: {error}"))
    # The server answered the probe: it is up, whatever the answer's shape.
    answered = conformant.reason in (
        reasons.CONFORMANT,
        reasons.SCHEMA_MISMATCH,
        reasons.INFERENCE_FAILED,
        reasons.PROBE_REFUSED,
        reasons.MODEL_NOT_LISTED,
        reasons.MODEL_NOT_READY,
    )
    available = (
        passed(reasons.ANSWERING, f"{client.url(target.probe_path or '')} answers")
        if answered
        else conformant
    )
    return Verdict(fingerprint, available, conformant, offered, server)
