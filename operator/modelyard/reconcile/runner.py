"""When reconciles run: one at a time per object, coalesced, retried with backoff.

Many events point at one Model — its own changes, its Deployment, each of its pods, its
template, its versions. Each only means "look again", so while a reconcile of a Model runs,
further requests collapse into one more pass after it instead of queueing up. Temporary API
failures (409, 429, 5xx, timeouts) are retried with exponential backoff, honouring Retry-After;
permanent ones are logged once and wait for the next change.

Every kind goes through this one queue — Models, templates, Registries, ModelVersions, and the
periodic re-checks of Registries and versions — so one switch decides whether this process
reconciles at all: a standby replica (`lead`/`stand_by`, driven by the leader election) keeps
its stores warm and schedules nothing, and the process that leads runs everything.

The stores of our kinds and of the children are live mappings kept by the informers that
`modelyard.handlers` starts; this module only reads them.
"""

from __future__ import annotations

import asyncio
import calendar
import ctypes
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard import metrics
from modelyard.api.v1alpha1 import SignatureMode
from modelyard.builders import drift, labels
from modelyard.config import OperatorConfig
from modelyard.kube import ApiError, Kube, NotLeading, Priority, PriorityGate
from modelyard.reconcile.conformance import Prober
from modelyard.reconcile.model import ModelWorld, Outcome, reconcile_model
from modelyard.reconcile.registry import (
    Connection,
    Connections,
    RegistryOutcome,
    reconcile_registry,
)
from modelyard.reconcile.template import TemplateOutcome, reconcile_template
from modelyard.reconcile.version import VersionOutcome, reconcile_version
from modelyard.registry.credentials import CONSENT_VALUE
from modelyard.registry.egress import EgressPolicy

logger = logging.getLogger(__name__)

Manifest = dict[str, Any]
Key = tuple[str, str]
#: Store name → key → objects: `model_bodies` and `template_bodies` by (namespace, name),
#: `registry_bodies` and `version_bodies` by namespace, `models_by_template` (namespace,
#: template) → Model names.
Indices = Mapping[str, Mapping[Any, Iterable[Any]]]

MAX_BACKOFF = 60.0
#: A child refused by the server is tried again, backing off, at most this far apart: a raised
#: quota or a removed policy sends no event the operator watches, so this is how soon at most it
#: recovers (an edit of the Model or its template is seen at once).
MAX_REFUSED_BACKOFF = 120.0
#: Failed passes in a row after which a server error applying a child is reported in status.
PERSISTENT_AFTER = 2
#: Model passes running at once: new Models' first turns (their Deployments), and every other
#: pass (the rest of a new Model, changes, pods and Deployments reporting). A waiting pass holds
#: only its key; a running one holds its plan. Apart, so a burst of new Models neither waits
#: behind the rest nor holds it back: the rest includes the Services, which the API server
#: creates one at a time, and which a burst finishes sooner when they start with it.
FIRST_TURNS_IN_FLIGHT = 64
LATER_PASSES_IN_FLIGHT = 32
TEMPLATE_DEBOUNCE = 0.5
#: How often the periodic checks look for Registries and versions that are due.
CHECK_STEP = 5.0
#: The finalizer kopf added to templates, Registries and ModelVersions in releases that ran on
#: it: removed from objects being deleted, or they would never go.
LEGACY_FINALIZER = "modelyard.dev/kopf-finalizer"

#: The kinds a Model owns one of each, by its name.
CHILD_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "ScaledObject")
#: Kind → (namespace, Model) → that Model's objects of the kind.
Children = Mapping[str, Mapping[Key, Iterable[Manifest]]]


def _first(index: Mapping[Any, Iterable[Any]] | None, key: Any) -> Any:
    if index is None or key not in index:
        return None
    return next(iter(index[key]), None)


def _all(index: Mapping[Any, Iterable[Any]] | None, key: Any) -> list[Any]:
    if index is None or key not in index:
        return []
    return list(index[key])


def _epoch(timestamp: Any) -> float:
    """RFC 3339 `...Z` as seconds since the epoch; now when absent or unreadable."""
    try:
        return float(calendar.timegm(time.strptime(str(timestamp), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return time.time()


def model_world(
    key: Key,
    indices: Indices,
    children: Children,
    consenting: Mapping[Key, Iterable[Manifest]] | None = None,
) -> ModelWorld | None:
    """Everything about one Model, from the indices; None when the Model is gone."""
    namespace = key[0]
    body = _first(indices.get("model_bodies"), key)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return None
    template_name = (body.get("spec") or {}).get("template")
    owned = {}
    canary = None
    for kind in CHILD_KINDS:
        # By name: a Model's canary Deployment carries its label too.
        for child in _all(children.get(kind), key):
            name = (child.get("metadata") or {}).get("name")
            if name == key[1]:
                owned[kind] = child
            elif kind == "Deployment" and name == labels.canary_name(key[1]):
                canary = child
    return ModelWorld(
        model=body,
        template=_first(indices.get("template_bodies"), (namespace, template_name)),
        registries=_all(indices.get("registry_bodies"), namespace),
        versions=_all(indices.get("version_bodies"), namespace),
        children=owned,
        canary=canary,
        pods=_all(children.get("Pod"), key),
        permitted_secrets=None
        if consenting is None
        else frozenset(
            (secret.get("metadata") or {}).get("name", "")
            for secret in _all(consenting, (namespace, CONSENT_VALUE))
        ),
    )


def _version(obj: Manifest | None) -> int | None:
    value = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def newest(indexed: Manifest | None, written: Manifest | None) -> Manifest | None:
    """The more recent of the index's copy and the copy our own last write returned.

    kopf's indices follow the watch, which lags our writes: a pass right after a write would
    otherwise compare against the stale copy, write the same status again (and announce the same
    Event twice) or re-apply a child it just created. resourceVersions are etcd revisions,
    increasing integers on every real apiserver; should one ever not be, the index wins, which
    costs a redundant write, never a wrong one.
    """
    if written is None:
        return indexed
    if indexed is None:
        return written
    ours, theirs = _version(written), _version(indexed)
    if ours is not None and theirs is not None and ours > theirs:
        return written
    return indexed


def caught_up(indexed: Manifest | None, written: Manifest) -> bool:
    """The index holds our write or something newer: our copy is no longer needed."""
    ours, theirs = _version(written), _version(indexed)
    return ours is not None and theirs is not None and theirs >= ours


async def release_legacy_finalizer(body: Manifest, kube: Kube) -> Manifest:
    """An object being deleted loses kopf's old finalizer (nothing here acts on it); the
    object as it is afterwards."""
    metadata = body.get("metadata") or {}
    finalizers = list(metadata.get("finalizers") or [])
    if metadata.get("deletionTimestamp") and LEGACY_FINALIZER in finalizers:
        finalizers.remove(LEGACY_FINALIZER)
        return await kube.set_finalizers(
            str(body.get("apiVersion")),
            str(body.get("kind")),
            metadata.get("namespace"),
            metadata["name"],
            finalizers=finalizers,
            resource_version=metadata.get("resourceVersion"),
        )
    return body


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def _kept(answered: Manifest) -> Manifest:
    """A write's answer in the form the indices keep: packed for children, and never with
    managedFields (the bulk of an answer)."""
    if answered["kind"] in CHILD_KINDS:
        return drift.packed(answered)
    metadata = dict(answered.get("metadata") or {})
    metadata.pop("managedFields", None)
    return {**answered, "metadata": metadata}


@dataclass
class _Slot:
    """Coalescing state of one object: a pass is running, and whether another is wanted."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    again: bool = False
    task: asyncio.Task[None] | None = None
    failures: int = 0
    #: The message of the refusal last logged (see `_drain`).
    refused: str | None = None
    #: The error last logged (see `_drain`): logged again only when it changes.
    cause: str | None = None


class Runner:
    def __init__(
        self, kube: Kube, config: OperatorConfig, egress: EgressPolicy | None = None
    ) -> None:
        self.kube = kube
        self.config = config
        self.indices: Indices = {}
        self.children: Children = {}
        #: Secrets labelled for modelyard's use, by (namespace, label value); None until the
        #: informer runs (a Runner without one checks nothing: tests of single passes).
        self.consenting: Mapping[Key, Iterable[Manifest]] | None = None
        self._slots: dict[tuple[str, Key], _Slot] = {}
        #: What our own writes returned, by (kind, namespace, name); see `newest`.
        self._latest: dict[tuple[str, str, str], Manifest] = {}
        self.connections = Connections(egress=egress)
        self._template_fingerprints: dict[Key, tuple[Any, ...]] = {}
        self.states = metrics.ReadyStates()
        self.passes = 0
        self._first_turns = PriorityGate(FIRST_TURNS_IN_FLIGHT)
        self._later_passes = PriorityGate(LATER_PASSES_IN_FLIGHT)
        #: Asks Models with a probe (and external Models) whether they answer; a changed
        #: verdict asks for a pass.
        self.prober = Prober(kube, config.probes, self.model_soon, egress)
        metrics.TRACKED.source = self.tracked
        #: Whether this process reconciles (holds the leader Lease, or runs alone).
        self.leading = False
        #: When each Registry, ModelVersion and signed template was last checked
        #: (time.monotonic()).
        self._checked: dict[tuple[str, Key], float] = {}
        self._check_passes: dict[str, Callable[[Key], Awaitable[Any]]] = {
            "registry": self.registry_now,
            "version": self.version_now,
            "template": self.template_now,
        }
        #: Templates whose next pass asks the registry for signatures again, not the cache.
        self._fresh_signatures: set[Key] = set()
        #: Passes asked for later (`model_later`), by Model.
        self._timers: dict[Key, asyncio.TimerHandle] = {}

    # -- leadership ---------------------------------------------------------------------------

    def lead(self) -> None:
        """Start reconciling: every object gets a pass, as the stores hold it now.

        Level-based passes over settled objects find nothing to write, so taking over from
        another replica (or a restart) costs reads of memory, not writes.
        """
        self.leading = True
        for key in self._keys("registry_bodies"):
            self.registry_soon(key)
        for key in self._keys("template_bodies"):
            self.template_soon(key)
        for key in self._keys("version_bodies"):
            self.version_soon(key)
        for key in self._keys("model_bodies"):
            self.model_soon(key)

    def stand_by(self) -> None:
        """Stop reconciling at once (the Lease is lost or given up): passes in flight are
        cancelled, and what they kept goes, so leading again starts from the stores."""
        self.leading = False
        for slot in self._slots.values():
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
        self._slots.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._latest.clear()
        self._checked.clear()
        self._fresh_signatures.clear()
        self.prober.forget_all()
        self.states.clear()

    def _keys(self, index_name: str) -> list[Key]:
        index = self.indices.get(index_name) or {}
        if index_name in ("registry_bodies", "version_bodies"):
            return [
                (namespace, body["metadata"]["name"])
                for namespace in list(index)
                for body in _all(index, namespace)
            ]
        return list(index)

    async def checks(self) -> None:
        """Re-check each Registry every checkIntervalSeconds, and each ModelVersion (and each
        template whose Registry asks for signatures) as often as its Registry: a moved tag, a
        deleted digest, a signature added or a registry outage shows. A check that finds
        nothing new writes nothing. Until cancelled."""
        while True:
            await asyncio.sleep(CHECK_STEP)
            if not self.leading:
                continue
            now = time.monotonic()
            for kind, key in list(self._checked):
                if kind == "registry":
                    interval = self.check_interval(key)
                elif kind == "template":
                    body = _first(self.indices.get("template_bodies"), key) or {}
                    image = (body.get("spec") or {}).get("image") or {}
                    interval = self.check_interval((key[0], image.get("registry", "")))
                else:
                    body = self._named("version_bodies", key) or {}
                    interval = self.check_interval(
                        (key[0], (body.get("spec") or {}).get("registry", ""))
                    )
                if now - self._checked[(kind, key)] >= interval:
                    self._checked[(kind, key)] = now
                    if kind == "template":
                        self._fresh_signatures.add(key)
                    self._soon(kind, key, self._check_passes[kind])

    def _slot(self, kind: str, key: Key) -> _Slot:
        return self._slots.setdefault((kind, key), _Slot())

    # -- Models ------------------------------------------------------------------------------

    def _has_deployment(self, key: Key) -> bool:
        return (
            _first(self.children.get("Deployment"), key) is not None
            or ("Deployment", *key) in self._latest
        )

    async def model_now(self, key: Key) -> Outcome | None:
        """Reconcile one Model (serialised with background passes); ApiError propagates.

        A burst of thousands of new Models would otherwise have thousands of passes in flight,
        each holding its plan while it waits for the API client: that backlog was most of the
        operator's memory after a burst. Passes wait for a turn holding only their key, and a
        new Model's first turn covers only its Deployment (what its users wait for); the
        Service, autoscaler and status come in its next turn, which waits with the other
        passes, not behind the other new Models.
        """
        # A retry (a refused child) is a whole pass: what can be made is made.
        new = not self._has_deployment(key) and self._slot("model", key).failures == 0
        gate = self._first_turns if new else self._later_passes
        await gate(Priority.WRITE)
        try:
            return await self._model_pass(key, first_turn=new)
        finally:
            gate.release()

    async def _model_pass(self, key: Key, first_turn: bool) -> Outcome | None:
        slot = self._slot("model", key)
        async with slot.lock:
            world = model_world(key, self.indices, self.children, self.consenting)
            if world is None:
                self.forget("Model", key)
                self.prober.forget_model(key)
                timer = self._timers.pop(key, None)
                if timer is not None:
                    timer.cancel()
                self.states.forget("Model", *key)
                self.states.forget("ModelAutoscaling", *key)
                return None
            world.model = self.fresh("Model", key, world.model) or world.model
            for kind in CHILD_KINDS:
                child = self.fresh(kind, key, world.children.get(kind))
                if child is not None:
                    world.children[kind] = child
            world.canary = self.fresh(
                "Deployment", (key[0], labels.canary_name(key[1])), world.canary
            )
            with metrics.timed("Model"):
                outcome = await reconcile_model(
                    world,
                    self.kube,
                    self.config,
                    first_turn,
                    persistent=slot.failures >= PERSISTENT_AFTER,
                    prober=self.prober,
                )
            self.keep_written(*outcome.written)
            for gone in outcome.deleted_names:
                self.forget(*gone)
            if outcome.unfinished:
                self.model_soon(key)
                return outcome
            if outcome.recheck_after is not None:
                self.model_later(key, outcome.recheck_after)
            ready = outcome.state == "READY"
            self.states.record("Model", *key, str(ready), outcome.reason)
            if outcome.autoscaling is not None:
                # modelyard_resources{kind="ModelAutoscaling",ready="False"} counts the Models
                # that cannot scale, whatever their Ready says.
                self.states.record("ModelAutoscaling", *key, *outcome.autoscaling)
            if ready:
                metadata = world.model.get("metadata") or {}
                self.states.first_ready(
                    str(metadata.get("uid")), _epoch(metadata.get("creationTimestamp"))
                )
            return outcome

    def model_soon(self, key: Key) -> None:
        self._soon("model", key, self.model_now)

    def model_later(self, key: Key, seconds: float) -> None:
        """A pass in `seconds` (a canary's analysis ends then), unless one is already due
        sooner; nothing else would bring it, as nothing changes in between."""
        timer = self._timers.get(key)
        if timer is not None and timer.when() <= asyncio.get_running_loop().time() + seconds:
            return
        if timer is not None:
            timer.cancel()

        def run() -> None:
            self._timers.pop(key, None)
            self.model_soon(key)

        self._timers[key] = asyncio.get_running_loop().call_later(seconds, run)

    def template_changed_for_models(self, key: Key, body: Mapping[str, Any]) -> bool:
        """Whether a template event changes anything its Models read.

        Its status also lists its Models, so it changes with every Model created: fanning out
        on each of those would reconcile every Model once per new Model — quadratic.
        """
        metadata = body.get("metadata") or {}
        status = body.get("status") or {}
        verdicts = {
            c.get("type"): (c.get("status"), c.get("reason"))
            for c in status.get("conditions") or []
            if c.get("type") in ("Ready", "Signed")
        }
        fingerprint = (
            metadata.get("generation"),
            metadata.get("deletionTimestamp"),
            status.get("resolvedDigest"),
            # Models of a template under a signature policy wait for its verdict on this spec.
            status.get("observedGeneration"),
            verdicts.get("Ready"),
            verdicts.get("Signed"),
        )
        if self._template_fingerprints.get(key) == fingerprint:
            return False
        self._template_fingerprints[key] = fingerprint
        return True

    def models_using_template(self, namespace: str, template: str) -> list[str]:
        return sorted(set(_all(self.indices.get("models_by_template"), (namespace, template))))

    def external_models_using_secret(self, namespace: str, secret: str) -> list[str]:
        """External Models whose credentials or CA are in `secret`."""
        index = self.indices.get("model_bodies") or {}
        names = []
        for ns, name in [k for k in list(index) if k[0] == namespace]:
            external = ((_first(index, (ns, name)) or {}).get("spec") or {}).get("external") or {}
            used = (
                (external.get("credentials") or {}).get("secretName"),
                (external.get("tls") or {}).get("caSecret"),
            )
            if secret in used:
                names.append(name)
        return names

    def secret_changed(self, namespace: str, secret: str, event: str) -> None:
        """A consenting Secret appeared, changed, or stopped consenting (or is gone): whatever
        names it looks again — Registries, external Models, Models with secret parameters."""
        for registry in self.registries_using_secret(namespace, secret):
            self.registry_soon((namespace, registry))
        for model in self.external_models_using_secret(namespace, secret):
            self.prober.ask_again((namespace, model))
        if event in ("ADDED", "DELETED"):
            index = self.indices.get("model_bodies") or {}
            for ns, name in [k for k in list(index) if k[0] == namespace]:
                parameters = ((_first(index, (ns, name)) or {}).get("spec") or {}).get("parameters")
                # Any shape can reach here past a relaxed CRD; the Model's pass says what is
                # wrong with it.
                if isinstance(parameters, dict) and any(
                    isinstance(v, str) and v.startswith(f"{secret}/") for v in parameters.values()
                ):
                    self.model_soon((ns, name))

    def models_in_namespace(self, namespace: str) -> list[str]:
        index = self.indices.get("model_bodies") or {}
        return sorted(name for (ns, name) in list(index) if ns == namespace)

    # -- ModelTemplates ----------------------------------------------------------------------

    async def template_now(self, key: Key) -> TemplateOutcome | None:
        async with self._slot("template", key).lock:
            body = _first(self.indices.get("template_bodies"), key)
            if body is None:
                self._gone("template", "ModelTemplate", key)
                return None
            body = await release_legacy_finalizer(body, self.kube)
            body = self.fresh("ModelTemplate", key, body) or body
            models = self.models_using_template(*key)
            image = (body.get("spec") or {}).get("image") or {}
            signatures = self._signature_mode(key[0], image.get("registry"))
            if signatures is not None:
                self._checked.setdefault(("template", key), time.monotonic())
            else:
                self._checked.pop(("template", key), None)
            fresh = key in self._fresh_signatures
            self._fresh_signatures.discard(key)
            # A tag is resolved with the registry, and signatures a policy asks for checked there.
            connection = (
                await self._connection(key[0], image["registry"])
                if image.get("tag") or signatures is not None
                else None
            )
            with metrics.timed("ModelTemplate"):
                outcome = await reconcile_template(
                    body,
                    models,
                    self.kube,
                    self.config,
                    connection,
                    signatures=signatures,
                    reuse_signatures=not fresh,
                )
            self.keep_written(outcome.status)
            self.states.record("ModelTemplate", *key, str(outcome.ready), outcome.reason)
            return outcome

    def _signature_mode(self, namespace: str, registry: str | None) -> SignatureMode | None:
        """What the Registry's policy asks of unsigned images, read from its spec (not from its
        connection: a Registry that cannot be reached still asks it)."""
        body = self._named("registry_bodies", (namespace, registry)) if registry else None
        policy = ((body or {}).get("spec") or {}).get("signatures")
        if not isinstance(policy, dict):
            return None
        try:
            return SignatureMode(policy.get("mode") or SignatureMode.ENFORCE)
        except ValueError:
            return SignatureMode.ENFORCE

    def template_soon(self, key: Key, debounce: bool = False) -> None:
        """`debounce`: its list of Models changed — a burst of new Models each changes it, and
        deserves one write for the burst, not one per Model."""
        self._soon("template", key, self.template_now, TEMPLATE_DEBOUNCE if debounce else 0.0)

    # -- Registries and ModelVersions --------------------------------------------------------

    def _named(self, index_name: str, key: Key) -> Manifest | None:
        namespace, name = key
        for body in _all(self.indices.get(index_name), namespace):
            if (body.get("metadata") or {}).get("name") == name:
                return dict(body)
        return None

    async def _connection(self, namespace: str, registry: str) -> Connection | None:
        """The registry's client; checked first if this process has not done so yet."""
        connection = self.connections.get((namespace, registry))
        if connection is None and self._named("registry_bodies", (namespace, registry)) is not None:
            await self.registry_now((namespace, registry))
            connection = self.connections.get((namespace, registry))
        return connection

    async def registry_now(self, key: Key) -> RegistryOutcome | None:
        async with self._slot("registry", key).lock:
            body = self._named("registry_bodies", key)
            if body is None:
                await self.connections.drop(key)
                self._gone("registry", "Registry", key)
                return None
            self._checked[("registry", key)] = time.monotonic()
            body = await release_legacy_finalizer(body, self.kube)
            before = self.connections.get(key)
            was_ready = before.ready if before else None
            body = self.fresh("Registry", key, body) or body
            with metrics.timed("Registry"):
                outcome = await reconcile_registry(body, self.kube, self.connections)
            self.keep_written(outcome.status)
            connection = outcome.connection
            self.states.record(
                "Registry", *key, str(outcome.ready), connection.reason if connection else "Invalid"
            )
        if outcome.ready != was_ready or outcome.trust_changed:
            self._registry_users_soon(key)
        return outcome

    def registry_soon(self, key: Key) -> None:
        self._soon("registry", key, self.registry_now)

    def check_interval(self, key: Key) -> float:
        connection = self.connections.get(key)
        return connection.check_interval if connection else 300.0

    def _registry_users_soon(self, key: Key) -> None:
        """Versions and tagged templates that verify against this registry look again."""
        namespace, name = key
        for body in _all(self.indices.get("version_bodies"), namespace):
            if (body.get("spec") or {}).get("registry") == name:
                self.version_soon((namespace, body["metadata"]["name"]))
        templates = self.indices.get("template_bodies") or {}
        for template_key in [k for k in list(templates) if k[0] == namespace]:
            template = _first(templates, template_key) or {}
            if ((template.get("spec") or {}).get("image") or {}).get("registry") == name:
                self.template_soon(template_key)

    def registries_using_secret(self, namespace: str, secret: str) -> list[str]:
        names = []
        for body in _all(self.indices.get("registry_bodies"), namespace):
            spec = body.get("spec") or {}
            keys = ((spec.get("signatures") or {}).get("publicKeys")) or []
            used = {
                spec.get("credentialsSecret"),
                (spec.get("tls") or {}).get("caSecret"),
                *(key.get("secretName") for key in keys if isinstance(key, dict)),
            }
            if secret in used:
                names.append(body["metadata"]["name"])
        return names

    def same_version(self, key: Key, spec: Mapping[str, Any] | None = None) -> list[Manifest]:
        """Other ModelVersions publishing the same (model, version) pair in the namespace.

        `spec` is given for a version that is gone from the index (deleted): its duplicates
        must look again, since one of them now owns the pair.
        """
        if spec is None:
            body = self._named("version_bodies", key)
            if body is None:
                return []
            spec = body.get("spec") or {}
        return [
            dict(other)
            for other in _all(self.indices.get("version_bodies"), key[0])
            if (other.get("metadata") or {}).get("name") != key[1]
            and (other.get("spec") or {}).get("model") == spec.get("model")
            and (other.get("spec") or {}).get("version") == spec.get("version")
        ]

    async def version_now(self, key: Key) -> VersionOutcome | None:
        async with self._slot("version", key).lock:
            body = self._named("version_bodies", key)
            if body is None:
                self._gone("version", "ModelVersion", key)
                return None
            self._checked[("version", key)] = time.monotonic()
            body = await release_legacy_finalizer(body, self.kube)
            registry = (body.get("spec") or {}).get("registry", "")
            connection = await self._connection(key[0], registry)
            body = self.fresh("ModelVersion", key, body) or body
            with metrics.timed("ModelVersion"):
                outcome = await reconcile_version(
                    body,
                    self.same_version(key),
                    connection,
                    self.kube,
                    self.connections.problems.get((key[0], registry)),
                )
            self.keep_written(outcome.status)
            self.states.record("ModelVersion", *key, str(outcome.ready), outcome.reason)
            return outcome

    def version_soon(self, key: Key) -> None:
        self._soon("version", key, self.version_now)

    def keep_written(self, *written: Manifest | None) -> None:
        """Keep what our writes returned until the watch catches up with it."""
        for answered in written:
            if answered and answered.get("kind"):
                obj = _kept(answered)
                metadata = obj.get("metadata") or {}
                key = (
                    str(obj["kind"]),
                    metadata.get("namespace") or "default",
                    metadata.get("name", ""),
                )
                if newest(self._latest.get(key), obj) is obj:
                    self._latest[key] = obj

    def fresh(self, kind: str, key: Key, indexed: Manifest | None) -> Manifest | None:
        """The newer of the index's copy and our last write's; ours is dropped once caught up,
        so this cache only ever holds the few objects written in the last moments."""
        slot = (kind, *key)
        written = self._latest.get(slot)
        if written is not None and caught_up(indexed, written):
            del self._latest[slot]
            return indexed
        return newest(indexed, written)

    def is_echo(self, kind: str, key: Key, seen: Mapping[str, Any]) -> bool:
        """Whether a watch event brings back exactly what our own last write returned: a pass
        for it would find nothing to do."""
        written = self._latest.get((kind, *key))
        if written is None:
            return False
        version = (seen.get("metadata") or {}).get("resourceVersion")
        if version is None or version != (written.get("metadata") or {}).get("resourceVersion"):
            return False
        # The index holds it now: our copy is no longer needed.
        del self._latest[(kind, *key)]
        return True

    def forget(self, kind: str, key: Key) -> None:
        """The object is gone: a remembered copy must not resurrect it."""
        self._latest.pop((kind, *key), None)

    def _gone(self, slot_kind: str, kind: str, key: Key) -> None:
        """Everything kept for an object that no longer exists: thousands of templates,
        registries or versions created and deleted must leave nothing behind."""
        self.forget(kind, key)
        self.states.forget(kind, *key)
        self._checked.pop((slot_kind, key), None)
        if kind == "ModelTemplate":
            self._template_fingerprints.pop(key, None)
            self._fresh_signatures.discard(key)
        slot = self._slots.get((slot_kind, key))
        if slot is not None and (slot.task is None or slot.task is asyncio.current_task()):
            del self._slots[(slot_kind, key)]

    def tracked(self) -> dict[str, int]:
        """How many objects the runner keeps state for, by kind (for tests and debugging)."""
        counts: dict[str, int] = dict.fromkeys(("model", "template", "registry", "version"), 0)
        for kind, _ in self._slots:
            counts[kind] = counts.get(kind, 0) + 1
        counts["connections"] = len(self.connections.by_key)
        counts["templateFingerprints"] = len(self._template_fingerprints)
        return counts

    # -- scheduling --------------------------------------------------------------------------

    def _soon(
        self, kind: str, key: Key, run: Callable[[Key], Awaitable[Any]], delay: float = 0.0
    ) -> None:
        if not self.leading:
            return  # a standby: `lead` looks at everything when its turn comes
        slot = self._slot(kind, key)
        if slot.task is not None and not slot.task.done():
            slot.again = True
            return
        slot.task = asyncio.get_running_loop().create_task(self._drain(kind, key, slot, run, delay))

    async def _drain(
        self,
        kind: str,
        key: Key,
        slot: _Slot,
        run: Callable[[Key], Awaitable[Any]],
        delay: float = 0.0,
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        while True:
            slot.again = False
            self.passes += 1
            try:
                # Only the verdict is kept: this task may wait a long time for its next turn,
                # and the outcome holds what the writes answered: in a burst, every new Model's
                # Deployment as the server returned it, kept alive while it waits.
                refused = getattr(await run(key), "refused", None)
                if refused is None:
                    slot.failures, slot.refused = 0, None
                else:
                    slot.failures += 1
                    delay = min(MAX_REFUSED_BACKOFF, 0.5 * 2**slot.failures)
                    # Logged once per cause, not once per retry.
                    log = logger.warning if refused.message != slot.refused else logger.debug
                    log("%s %s/%s: %s; trying again in %.1f s", kind, *key, refused.message, delay)
                    slot.refused = refused.message
                    await asyncio.sleep(delay)
                    slot.again = True
            except NotLeading:
                if not self.leading:
                    return  # the Lease was lost mid-pass: whoever leads now does it
                await self._again(slot)  # still leading (renewed since): made again
            except ApiError as problem:
                cause = str(problem)
                if not problem.temporary:
                    # Waits for the next change (an edit, a periodic check): said once.
                    log = logger.error if cause != slot.cause else logger.debug
                    log("%s %s/%s: %s", kind, *key, problem)
                    slot.failures, slot.cause = 0, cause
                else:
                    slot.failures += 1
                    delay = problem.retry_after or min(MAX_BACKOFF, 0.5 * 2**slot.failures)
                    log = logger.warning if cause != slot.cause else logger.debug
                    log("%s %s/%s: %s; retrying in %.1f s", kind, *key, problem, delay)
                    slot.cause = cause
                    await asyncio.sleep(delay)
                    slot.again = True
            except Exception as error:
                # A bug: the traceback once per cause, then one line per retry at debug
                # level, backing off to MAX_BACKOFF.
                slot.failures += 1
                cause = f"{type(error).__name__}: {error}"
                if cause != slot.cause:
                    logger.exception("%s %s/%s: reconcile failed", kind, *key)
                else:
                    logger.debug("%s %s/%s: reconcile failed again: %s", kind, *key, cause)
                slot.cause = cause
                await asyncio.sleep(min(MAX_BACKOFF, 0.5 * 2**slot.failures))
                slot.again = True
            else:
                slot.cause = None
            if not slot.again:
                if kind == "model" and self._slots.get((kind, key)) is slot:
                    # Model passes run only in this task, so nothing else holds or awaits the
                    # slot's lock: it is made again when needed, rather than kept for each of
                    # thousands of idle Models.
                    del self._slots[(kind, key)]
                return

    @staticmethod
    async def _again(slot: _Slot) -> None:
        slot.failures += 1
        await asyncio.sleep(min(MAX_BACKOFF, 0.5 * 2**slot.failures))
        slot.again = True

    def busy(self) -> bool:
        return any(s.task is not None and not s.task.done() for s in self._slots.values())

    async def release_memory(self, every: float = 20.0) -> None:
        """After a burst, hand the memory it used back to the system, once the work is done.

        A burst of thousands of Models briefly needs a lot more memory than the operator holds
        once they are reconciled, and the C allocator keeps freed memory for the process, so
        the resident size would stay at the burst's peak. glibc's `malloc_trim` returns it.
        Runs only when no pass is running and some ran since the last time; elsewhere (musl,
        macOS) it does nothing.
        """
        trim = _malloc_trim()
        seen = self.passes
        while True:
            await asyncio.sleep(every)
            if self.passes != seen and not self.busy():
                seen = self.passes
                gc.collect()
                if trim is not None:
                    trim(0)

    async def idle(self) -> None:
        """Wait until no background pass is running (for orderly shutdown and tests)."""
        while True:
            pending = [
                s.task for s in self._slots.values() if s.task is not None and not s.task.done()
            ]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)
