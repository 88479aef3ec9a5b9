"""Does the model answer, and answer in its type's schema? Asked in the background.

Ready pods only say that a health endpoint answers; a model that loaded the wrong weights or
speaks another schema passes that too. A template (or an external Model) may declare a probe —
a sample request — and the Model is READY only while the answer conforms to its type's
response schema (`modelyard.api.contracts`). An external Model has no pods at all: whether its
server answers is the only availability there is.

A probe may take its whole timeout, so it never runs inside a reconcile pass: the pass asks the
`Prober` for the verdict on what it wants asked (a `Target`), the Prober asks in the background,
and when the verdict changes it asks for another pass of that Model. A verdict is for one
target: a rollout, an edited probe or another URL makes it stale, and the Model waits for a
fresh one. Targets are asked again every `probes.intervalSeconds` (`retrySeconds` while
failing); a verdict that did not change costs no pass and no write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from modelyard.api import contracts
from modelyard.api.v1alpha1 import ExternalModel, ModelTemplateSpec, Probe
from modelyard.config import Probes
from modelyard.kube import ApiError, Kube
from modelyard.registry import credentials
from modelyard.registry.egress import EgressPolicy, NotPermitted
from modelyard.registry.endpoint import Answer, Endpoint, ModelEndpoint
from modelyard.registry.oci import Failure, RegistryError
from modelyard.status import reasons
from modelyard.status.conditions import Check, failed, passed

logger = logging.getLogger(__name__)

Key = tuple[str, str]
#: A Model's (namespace, name), or (namespace, name, pod) for one of its canary's pods.
ProbeKey = tuple[str, ...]
#: How often the Prober looks for targets that are due.
TICK = 0.5
#: How long a Model's Service may refuse connections before that is its verdict: a new
#: worker's address reaches the Service's endpoints, and kube-proxy (or DNS) on the way,
#: a moment after the Deployment counts the worker ready. Meanwhile it is asked every second.
SETTLING_SECONDS = 10.0


@dataclass(frozen=True)
class Credential:
    """Where a header's value is kept; the value itself is read only when asking."""

    secret: str
    key: str
    header: str
    scheme: str | None


@dataclass(frozen=True)
class Target:
    """What to ask one Model, and how."""

    namespace: str
    url: str
    model_type: str
    #: The probe's path and request (as JSON text, so the target is hashable); None: no probe.
    probe_path: str | None = None
    probe_request: str | None = None
    timeout: float = 10.0
    #: External models only: GET this path for health; without it, any answer counts.
    health_path: str | None = None
    external: bool = False
    credential: Credential | None = None
    ca_secret: str | None = None
    insecure_skip_verify: bool = False
    #: The workers' pod-template hash: a rollout makes the last verdict stale.
    revision: str = ""
    #: The classes an image classifier's labels must be among, as registered (none: the
    #: server's own, when it is asked for them).
    classes: tuple[str, ...] = ()
    #: Where the server lists its classes (GET, a JSON list of strings); None: not asked.
    classes_path: str | None = None

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self.__dict__, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def service_target(
    namespace: str,
    name: str,
    *,
    port: int,
    model_type: str,
    probe: Probe,
    revision: str,
    config: Probes,
    cluster_ip: str = "",
) -> Target:
    address = config.service_address.format(
        name=name, namespace=namespace, port=port, clusterIP=cluster_ip
    )
    return _in_cluster(namespace, address, model_type, probe, revision)


def _in_cluster(
    namespace: str, address: str, model_type: str, probe: Probe, revision: str
) -> Target:
    return Target(
        namespace=namespace,
        url=f"http://{address}",
        model_type=model_type,
        probe_path=probe.path,
        probe_request=json.dumps(probe.request, sort_keys=True),
        timeout=float(probe.timeout_seconds),
        revision=revision,
    )


def pod_target(
    namespace: str,
    pod_ip: str,
    *,
    port: int,
    model_type: str,
    probe: Probe,
    revision: str,
    config: Probes,
) -> Target:
    """One worker asked on its own address: a canary's, or the current revision's while a
    canary shares the Service (whose answer could come from either)."""
    address = config.pod_address.format(podIP=pod_ip, port=port)
    return _in_cluster(namespace, address, model_type, probe, revision)


def external_target(namespace: str, external: ExternalModel) -> Target:
    credentials = external.credentials
    tls = external.tls
    probe = external.probe
    return Target(
        namespace=namespace,
        url=external.url,
        model_type=external.model_type.value,
        probe_path=probe.path if probe else None,
        probe_request=json.dumps(probe.request, sort_keys=True) if probe else None,
        timeout=float(probe.timeout_seconds) if probe else 10.0,
        health_path=external.health_path,
        external=True,
        credential=Credential(
            credentials.secret_name, credentials.key, credentials.header, credentials.scheme
        )
        if credentials
        else None,
        ca_secret=tls.ca_secret if tls else None,
        insecure_skip_verify=bool(tls and tls.insecure_skip_verify),
        classes=tuple(external.classes),
        classes_path=classes_path(external.model_type.value, external.classes_path),
    )


#: Where a model type's servers list their classes unless told otherwise.
DEFAULT_CLASSES_PATH = {"IMAGE_CLASSIFICATION": "/api/classes"}


def classes_path(model_type: str, given: str | None) -> str | None:
    """Where to ask a model for its classes: the path given, else its type's default."""
    return given or DEFAULT_CLASSES_PATH.get(model_type)


def of_template(target: Target, template: ModelTemplateSpec) -> Target:
    """`target` asking a template's workers for their classes too, as an external Model's
    server is asked."""
    return dataclasses.replace(
        target,
        classes=tuple(template.classes),
        classes_path=classes_path(template.model_type.value, template.classes_path),
    )


@dataclass(frozen=True)
class Verdict:
    fingerprint: str
    #: Whether the server answers at all (external Models: their Available condition).
    available: Check
    #: Whether the probe's answer conforms; None without a probe.
    conformant: Check | None = None
    #: The classes the server offers, when none are registered and it was asked.
    classes: tuple[str, ...] | None = None

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


def _refused(method: str, url: str, answer: Answer) -> Check | None:
    """The answer's status as a verdict: None when it is a success."""
    if answer.status in (401, 403):
        return failed(
            reasons.UNAUTHORIZED,
            f"{method} {url} answered {answer.status}: the server refused the credentials",
        )
    if not 200 <= answer.status < 300:
        return failed(reasons.ENDPOINT_ERROR, f"{method} {url} answered HTTP {answer.status}")
    return None


async def _health(client: ModelEndpoint, target: Target) -> Check:
    """An external server's health: its health path's 2xx, or any answer at all."""
    path = target.health_path or ""
    url = client.url(path)
    answer = await client.get(path)
    if target.health_path is None:
        if answer.status in (401, 403) or answer.status >= 500:
            return _refused("GET", url, answer) or failed(reasons.ENDPOINT_ERROR, url)
        return passed(reasons.ANSWERING, f"{url} answers")
    return _refused("GET", url, answer) or passed(reasons.ANSWERING, f"GET {url} answered 2xx")


async def _offered_classes(client: ModelEndpoint, target: Target) -> tuple[str, ...] | Check:
    """The classes the server lists at its classes path, or what is wrong with them: not a
    list of strings, or without a class the Model registered."""
    assert target.classes_path is not None
    url = client.url(target.classes_path)
    answer = await client.get(target.classes_path)
    refused = _refused("GET", url, answer)
    if refused is not None:
        return refused
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
    refused = _refused("POST", url, answer)
    if refused is not None:
        return refused
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
    )
    available = (
        passed(reasons.ANSWERING, f"{client.url(target.probe_path or '')} answers")
        if answered
        else conformant
    )
    return Verdict(fingerprint, available, conformant, offered)


def _same_question(before: Target, now: Target) -> bool:
    """The same probe of the same Model, asked of other workers (a new revision, or its pods
    rather than its Service while a canary shares it)."""
    if before.external or now.external:
        return dataclasses.replace(before, revision="") == dataclasses.replace(now, revision="")
    return dataclasses.replace(before, revision="", url="") == dataclasses.replace(
        now, revision="", url=""
    )


@dataclass
class _Entry:
    target: Target
    #: The Model a changed verdict asks a pass of.
    model: Key
    verdict: Verdict | None = None
    due: float = 0.0
    #: When this target was first asked (None: not yet).
    first_asked: float | None = None
    #: Holds the previous revision's verdict while the new workers settle in.
    settling: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Prober:
    """The verdicts of every Model with something to ask, kept fresh in the background."""

    def __init__(
        self,
        kube: Kube,
        config: Probes,
        changed: Callable[[Key], None],
        policy: EgressPolicy | None = None,
    ) -> None:
        self.kube = kube
        self.config = config
        self.policy = policy
        self.changed = changed
        self._entries: dict[ProbeKey, _Entry] = {}
        self._slots = asyncio.Semaphore(config.concurrency)

    def verdict(self, key: ProbeKey, target: Target, model: Key | None = None) -> Verdict | None:
        """The verdict on `target`, or None while it is being asked (a pass of `model`,
        by default the key, follows)."""
        entry = self._entries.get(key)
        if entry is None or entry.target != target:
            if entry is not None and entry.task is not None:
                entry.task.cancel()
            kept = None
            if entry is not None and _same_question(entry.target, target):
                # A rollout or a scale: the same question to the same Model. The last
                # answer stands until the new workers answer (asked at once), or a Model
                # that serves would flap to Probing with every rollout.
                kept = entry.verdict
            owner = model or (key[0], key[1])
            entry = self._entries[key] = _Entry(
                target, owner, verdict=kept, settling=kept is not None
            )
            if kept is not None:
                self._start(key, entry)
        if entry.verdict is None and entry.task is None:
            self._start(key, entry)
        return entry.verdict

    def offered_classes(self, key: ProbeKey) -> tuple[str, ...] | None:
        """The classes the server last listed, when the Model registered none."""
        entry = self._entries.get(key)
        return entry.verdict.classes if entry is not None and entry.verdict else None

    def forget(self, key: ProbeKey) -> None:
        """Nothing to ask any more (not serving): a later target starts afresh."""
        entry = self._entries.pop(key, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()

    def forget_model(self, model: Key) -> None:
        """A Model gone: neither it nor its canary's pods are asked any more."""
        self.forget(model)
        self.forget_canary(model)

    def forget_canary(self, model: Key, keep: frozenset[ProbeKey] = frozenset()) -> None:
        """The canary's pods that are gone (or all of them) are not asked any more."""
        for each in [k for k, e in self._entries.items() if e.model == model and k != model]:
            if each not in keep:
                self.forget(each)

    def forget_all(self) -> None:
        """Stand by: nothing is asked until this process leads again (and its passes ask)."""
        for key in list(self._entries):
            self.forget(key)

    def ask_again(self, key: ProbeKey) -> None:
        """Ask before the interval is up (its credentials Secret changed)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.due = 0.0

    def _start(self, key: ProbeKey, entry: _Entry) -> None:
        entry.task = asyncio.get_running_loop().create_task(self._ask(key, entry))

    async def _ask(self, key: ProbeKey, entry: _Entry) -> None:
        try:
            async with self._slots:
                verdict = await ask(self.kube, entry.target, self.policy)
        except Exception:
            logger.exception("Model %s/%s: probe failed", *entry.model)
            verdict = Verdict(
                entry.target.fingerprint,
                failed(reasons.ENDPOINT_UNREACHABLE, "the probe failed unexpectedly"),
            )
        finally:
            entry.task = None
        if self._entries.get(key) is not entry:
            return
        now = time.monotonic()
        entry.first_asked = entry.first_asked or now
        if (
            (entry.verdict is None or entry.settling)
            and not entry.target.external
            and verdict.conformant is not None
            and verdict.conformant.reason == reasons.ENDPOINT_UNREACHABLE
            and now - entry.first_asked < SETTLING_SECONDS
        ):
            # Still Probing: the Service has not caught up with the new workers yet.
            entry.due = now + 1.0
            return
        entry.settling = False
        before, entry.verdict = entry.verdict, verdict
        wait = self.config.interval_seconds if verdict.ok else self.config.retry_seconds
        entry.due = time.monotonic() + wait
        if before != verdict:
            failing = [c for c in (verdict.available, verdict.conformant) if c and not c.ok]
            if failing:
                logger.info(
                    "Model %s/%s: %s: %s", *entry.model, failing[0].reason, failing[0].message
                )
            elif before is not None:
                logger.info("Model %s/%s: answers again", *entry.model)
            self.changed(entry.model)

    async def run(self) -> None:
        """Ask again whatever is due, until cancelled."""
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for key, entry in list(self._entries.items()):
                asked = entry.verdict is not None or entry.first_asked is not None
                if entry.task is None and asked and entry.due <= now:
                    self._start(key, entry)
