"""What runs a pass, over what, and when: one work queue per kind, and each kind's pass.

Every kind goes through a `WorkQueue` (`modelyard.reconcile.queue`, which serialises a key's
passes, collapses requests and backs off on failure): Models, templates, Registries and
ModelVersions, and the periodic re-checks of Registries, versions and signed templates. So one
switch decides whether this process reconciles at all: a standby replica (`lead`/`stand_by`,
driven by the leader election) keeps its stores warm and schedules nothing, and the process
that leads runs everything.

A pass reads the informers' stores (live mappings kept by `modelyard.handlers`; only read
here), takes the newer of each object and what our own last write returned
(`modelyard.kube.written`), and calls the kind's reconcile; what a change wakes, here as in
the informers, follows the rules of `modelyard.reconcile.wakes`. Kept here, not in the queue,
because they are about the domain: a new Model's first turn (its Deployment, ahead of the
rest), a refusal reported in status once it persists, and when signatures and registries are
checked again.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from modelyard import metrics
from modelyard.api.v1alpha1 import SignatureMode
from modelyard.builders import drift, labels
from modelyard.config import OperatorConfig
from modelyard.kube import Kube, Priority, PriorityGate
from modelyard.kube.written import Written
from modelyard.reconcile import wakes
from modelyard.reconcile.conformance import Prober
from modelyard.reconcile.indices import Indices, Key, Manifest, every, first, named
from modelyard.reconcile.legacy import release_legacy_finalizer
from modelyard.reconcile.model import Outcome, reconcile_model
from modelyard.reconcile.model.world import CHILD_KINDS, Children, model_world
from modelyard.reconcile.queue import Result, Worker, WorkQueue
from modelyard.reconcile.registry import (
    Connection,
    Connections,
    RegistryOutcome,
    reconcile_registry,
)
from modelyard.reconcile.template import TemplateOutcome, reconcile_template
from modelyard.reconcile.version import VersionOutcome, reconcile_version
from modelyard.registry.egress import EgressPolicy

logger = logging.getLogger(__name__)

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

#: The kinds a Model owns one of each, by its name.
#: Kind → (namespace, Model) → that Model's objects of the kind.


def _epoch(timestamp: Any) -> float:
    """RFC 3339 `...Z` as seconds since the epoch; now when absent or unreadable."""
    try:
        return float(calendar.timegm(time.strptime(str(timestamp), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return time.time()


def _verdict_of(run: Callable[[Key], Awaitable[Any]]) -> Worker[Key]:
    """A kind's pass as the queue's worker: its outcome told as a `Result`."""

    async def work(key: Key) -> Result:
        # Only the verdict is kept: the queue's task may wait a long time for its next turn,
        # and the outcome holds what the writes answered: in a burst, every new Model's
        # Deployment as the server returned it, kept alive while it waits.
        refused = getattr(await run(key), "refused", None)
        return Result(refused=None if refused is None else refused.message)

    return work


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
        #: What our own writes returned, until the watch catches up; children in the form
        #: their informers keep them.
        self.written = Written(dict.fromkeys(CHILD_KINDS, drift.packed))
        self.connections = Connections(egress=egress)
        #: What the handlers last saw of each template that its Models read
        #: (`modelyard.handlers.predicates.Seen`): kept here, so that a template gone takes its
        #: fingerprint with it, and counted among the tracked objects.
        self.template_fingerprints: dict[Key, tuple[Any, ...]] = {}
        self.states = metrics.ReadyStates()
        self._first_turns = PriorityGate(FIRST_TURNS_IN_FLIGHT)
        self._later_passes = PriorityGate(LATER_PASSES_IN_FLIGHT)
        #: Asks Models with a probe (and external Models) whether they answer; a changed
        #: verdict asks for a pass.
        self.prober = Prober(kube, config.probes, self.model_soon, egress)
        metrics.TRACKED.source = self.tracked
        #: Whether this process reconciles (holds the leader Lease, or runs alone).
        self.leading = False
        #: When each Registry, ModelVersion and signed template was last checked
        #: (time.monotonic()), by (queue name, key).
        self._checked: dict[tuple[str, Key], float] = {}
        #: Templates whose next pass asks the registry for signatures again, not the cache.
        self._fresh_signatures: set[Key] = set()
        # Model passes run only in their queue's task, so nothing else holds or awaits a
        # Model's lock: its slot goes when idle, rather than kept for each of thousands of
        # idle Models. A Registry's pass is also run by others' passes (`_connection`).
        self.models = WorkQueue[Key]("model", _verdict_of(self.model_now), drop_idle=True)
        self.templates = WorkQueue[Key]("template", _verdict_of(self.template_now))
        self.registries = WorkQueue[Key]("registry", _verdict_of(self.registry_now))
        self.versions = WorkQueue[Key]("version", _verdict_of(self.version_now))
        self._queues = {
            queue.name: queue
            for queue in (self.models, self.templates, self.registries, self.versions)
        }

    # -- leadership ---------------------------------------------------------------------------

    def lead(self) -> None:
        """Start reconciling: every object gets a pass, as the stores hold it now.

        Level-based passes over settled objects find nothing to write, so taking over from
        another replica (or a restart) costs reads of memory, not writes.
        """
        self.leading = True
        for queue in self._queues.values():
            queue.start()
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
        for queue in self._queues.values():
            queue.stop()
        self.written.clear()
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
                for body in every(index, namespace)
            ]
        return list(index)

    # -- asking for passes --------------------------------------------------------------------

    def wake(self, woken: wakes.Wakes) -> None:
        """Passes for what a change wakes (`modelyard.reconcile.wakes`), in its order."""
        for key in woken.registries:
            self.registry_soon(key)
        for key in woken.probes:
            self.prober.ask_again(key)
        for key in woken.versions:
            self.version_soon(key)
        for key in woken.templates:
            self.template_soon(key)
        for key in woken.template_lists:
            self.template_soon(key, debounce=True)
        for key in woken.models:
            self.model_soon(key)

    def model_soon(self, key: Key) -> None:
        self.models.add(key)

    def model_later(self, key: Key, seconds: float) -> None:
        """A pass in `seconds` (a canary's analysis ends then), unless one is already due
        sooner; nothing else would bring it, as nothing changes in between."""
        self.models.add_after(key, seconds)

    def template_soon(self, key: Key, debounce: bool = False) -> None:
        """`debounce`: its list of Models changed — a burst of new Models each changes it, and
        deserves one write for the burst, not one per Model."""
        self.templates.add(key, TEMPLATE_DEBOUNCE if debounce else 0.0)

    def registry_soon(self, key: Key) -> None:
        self.registries.add(key)

    def version_soon(self, key: Key) -> None:
        self.versions.add(key)

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
                    body = first(self.indices.get("template_bodies"), key) or {}
                    image = (body.get("spec") or {}).get("image") or {}
                    interval = self.check_interval((key[0], image.get("registry", "")))
                else:
                    body = named(self.indices, "version_bodies", key) or {}
                    interval = self.check_interval(
                        (key[0], (body.get("spec") or {}).get("registry", ""))
                    )
                if now - self._checked[(kind, key)] >= interval:
                    self._checked[(kind, key)] = now
                    if kind == "template":
                        self._fresh_signatures.add(key)
                    self._queues[kind].add(key)

    def check_interval(self, key: Key) -> float:
        connection = self.connections.get(key)
        return connection.check_interval if connection else 300.0

    # -- Models ------------------------------------------------------------------------------

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
        new = not self._has_deployment(key) and self.models.failures(key) == 0
        gate = self._first_turns if new else self._later_passes
        await gate(Priority.WRITE)
        try:
            return await self._model_pass(key, first_turn=new)
        finally:
            gate.release()

    def _has_deployment(self, key: Key) -> bool:
        return first(self.children.get("Deployment"), key) is not None or self.written.holds(
            "Deployment", key
        )

    async def _model_pass(self, key: Key, first_turn: bool) -> Outcome | None:
        async with self.models.lock(key):
            world = model_world(key, self.indices, self.children, self.consenting)
            if world is None:
                # Its slot in the queue goes when this pass ends (idle).
                self.written.forget("Model", key)
                self.prober.forget_model(key)
                self.models.cancel_later(key)
                self.states.forget("Model", *key)
                self.states.forget("ModelAutoscaling", *key)
                return None
            world.model = self.written.fresh("Model", key, world.model) or world.model
            for kind in CHILD_KINDS:
                child = self.written.fresh(kind, key, world.children.get(kind))
                if child is not None:
                    world.children[kind] = child
            world.canary = self.written.fresh(
                "Deployment", (key[0], labels.canary_name(key[1])), world.canary
            )
            with metrics.timed("Model"):
                outcome = await reconcile_model(
                    world,
                    self.kube,
                    self.config,
                    first_turn,
                    persistent=self.models.failures(key) >= PERSISTENT_AFTER,
                    prober=self.prober,
                )
            self.written.keep(*outcome.written)
            for gone in outcome.deleted_names:
                self.written.forget(*gone)
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

    # -- ModelTemplates ----------------------------------------------------------------------

    async def template_now(self, key: Key) -> TemplateOutcome | None:
        async with self.templates.lock(key):
            body = first(self.indices.get("template_bodies"), key)
            if body is None:
                self._gone("template", "ModelTemplate", key)
                return None
            body = await release_legacy_finalizer(body, self.kube)
            body = self.written.fresh("ModelTemplate", key, body) or body
            models = wakes.models_using_template(self.indices, *key)
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
            self.written.keep(outcome.status)
            self.states.record("ModelTemplate", *key, str(outcome.ready), outcome.reason)
            return outcome

    def _signature_mode(self, namespace: str, registry: str | None) -> SignatureMode | None:
        """What the Registry's policy asks of unsigned images, read from its spec (not from its
        connection: a Registry that cannot be reached still asks it)."""
        body = named(self.indices, "registry_bodies", (namespace, registry)) if registry else None
        policy = ((body or {}).get("spec") or {}).get("signatures")
        if not isinstance(policy, dict):
            return None
        try:
            return SignatureMode(policy.get("mode") or SignatureMode.ENFORCE)
        except ValueError:
            return SignatureMode.ENFORCE

    # -- Registries and ModelVersions --------------------------------------------------------

    async def _connection(self, namespace: str, registry: str) -> Connection | None:
        """The registry's client; checked first if this process has not done so yet."""
        key = (namespace, registry)
        connection = self.connections.get(key)
        if connection is None and named(self.indices, "registry_bodies", key) is not None:
            await self.registry_now(key)
            connection = self.connections.get(key)
        return connection

    async def registry_now(self, key: Key) -> RegistryOutcome | None:
        async with self.registries.lock(key):
            body = named(self.indices, "registry_bodies", key)
            if body is None:
                await self.connections.drop(key)
                self._gone("registry", "Registry", key)
                return None
            self._checked[("registry", key)] = time.monotonic()
            body = await release_legacy_finalizer(body, self.kube)
            before = self.connections.get(key)
            was_ready = before.ready if before else None
            body = self.written.fresh("Registry", key, body) or body
            with metrics.timed("Registry"):
                outcome = await reconcile_registry(body, self.kube, self.connections)
            self.written.keep(outcome.status)
            connection = outcome.connection
            self.states.record(
                "Registry", *key, str(outcome.ready), connection.reason if connection else "Invalid"
            )
        if outcome.ready != was_ready or outcome.trust_changed:
            self.wake(wakes.registry_users(self.indices, key))
        return outcome

    async def version_now(self, key: Key) -> VersionOutcome | None:
        async with self.versions.lock(key):
            body = named(self.indices, "version_bodies", key)
            if body is None:
                self._gone("version", "ModelVersion", key)
                return None
            self._checked[("version", key)] = time.monotonic()
            body = await release_legacy_finalizer(body, self.kube)
            registry = (body.get("spec") or {}).get("registry", "")
            connection = await self._connection(key[0], registry)
            body = self.written.fresh("ModelVersion", key, body) or body
            with metrics.timed("ModelVersion"):
                outcome = await reconcile_version(
                    body,
                    wakes.same_version(self.indices, key),
                    connection,
                    self.kube,
                    self.connections.problems.get((key[0], registry)),
                )
            self.written.keep(outcome.status)
            self.states.record("ModelVersion", *key, str(outcome.ready), outcome.reason)
            if outcome.pin_next:
                self.versions.add(key)
            return outcome

    # -- what is kept ------------------------------------------------------------------------

    def _gone(self, queue: str, kind: str, key: Key) -> None:
        """Everything kept for an object that no longer exists: thousands of templates,
        registries or versions created and deleted must leave nothing behind."""
        self.written.forget(kind, key)
        self.states.forget(kind, *key)
        self._checked.pop((queue, key), None)
        if kind == "ModelTemplate":
            self.template_fingerprints.pop(key, None)
            self._fresh_signatures.discard(key)
        self._queues[queue].forget(key)

    def tracked(self) -> dict[str, int]:
        """How many objects the runner keeps state for, by kind (for tests and debugging)."""
        counts = {name: len(queue) for name, queue in self._queues.items()}
        counts["connections"] = len(self.connections.by_key)
        counts["templateFingerprints"] = len(self.template_fingerprints)
        return counts

    @property
    def passes(self) -> int:
        """Passes run, of every kind (the memory release looks whether any ran)."""
        return sum(queue.passes for queue in self._queues.values())

    def busy(self) -> bool:
        return any(queue.busy() for queue in self._queues.values())

    async def idle(self) -> None:
        """Wait until no pass is running in any queue (a pass may ask for others)."""
        while self.busy():
            for queue in self._queues.values():
                await queue.idle()
