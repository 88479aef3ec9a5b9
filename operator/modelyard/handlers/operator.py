"""The operator process: informers, the one reconcile queue, leadership, health and metrics.

Everything the reconcilers read is in memory, so a reconcile makes no GET requests: our own
kinds and the children (Deployments, Services, autoscalers, pods) come from the informers of
`modelyard.kube.informer`, which keep only the fields the reconcilers read. Each event only
says "look again" to the runner's queue (`modelyard.reconcile.runner`): a child's event asks
for a pass over the Model in its `modelyard.dev/model` label; template, Registry and
ModelVersion events fan out to the Models that depend on them. Passes are level-based — they
decide what to write — so nothing is persisted per object: no diff-base annotation, no
progress, no finalizer of ours on Models.

With `--leader-elect`, replicas share one Lease (`modelyard.kube.lease`): all keep their
informers warm and serve /metrics and health, and only the holder's runner schedules passes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from modelyard import config as operator_config
from modelyard import metrics
from modelyard.builders import drift
from modelyard.builders.labels import (
    MANAGED_BY,
    MODEL_LABEL,
    SPEC_HASH_ANNOTATION,
    TRACK_LABEL,
)
from modelyard.kube import Kube, Manifest, path
from modelyard.kube import login as kube_login
from modelyard.kube.informer import AcrossScopes, Informer, OwnerKey
from modelyard.kube.lease import Durations, LeaderElection
from modelyard.reconcile.runner import Runner
from modelyard.registry.credentials import CONSENT_LABEL, CONSENT_VALUE
from modelyard.registry.egress import EgressPolicy, api_server_endpoints, with_addresses

API_VERSION = "modelyard.dev/v1alpha1"
PREFIX = "modelyard.dev"
LEASE_NAME = "modelyard-leader"
#: Where a pod finds its own namespace.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: A CRD not installed yet is looked for this often (KEDA's, which is optional, less often).
OWN_KIND_RECHECK = 10.0

logger = logging.getLogger("modelyard")
Key = tuple[str, str]

#: The kinds of child watched by an informer each, with their apiVersion.
WATCHED_CHILDREN: dict[str, str] = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "ScaledObject": "keda.sh/v1alpha1",
    "Pod": "v1",
}
SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"


#: The parts of a container's status that `modelyard.status.model` reads.
_CONTAINER_FIELDS = ("name", "image", "ready", "started", "restartCount")


def _trim_container(container: Manifest) -> Manifest:
    kept = {key: container[key] for key in _CONTAINER_FIELDS if key in container}
    waiting = (container.get("state") or {}).get("waiting")
    if waiting:
        kept["state"] = {"waiting": waiting}
    terminated = (container.get("lastState") or {}).get("terminated")
    if terminated:
        kept["lastState"] = {
            "terminated": {
                k: terminated[k]
                for k in ("exitCode", "reason", "message", "startedAt", "finishedAt")
                if k in terminated
            }
        }
    return kept


def _trim_pod(pod: Manifest) -> Manifest:
    """Only what decides a Model's state, to keep memory flat with thousands of pods."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    trimmed: Manifest = drift.compact(
        {
            "metadata": {
                "name": meta.get("name"),
                "annotations": {SPEC_HASH_ANNOTATION: annotations.get(SPEC_HASH_ANNOTATION)},
                "labels": {k: v for k, v in (meta.get("labels") or {}).items() if k == TRACK_LABEL},
                "deletionTimestamp": meta.get("deletionTimestamp"),
            },
            "status": {
                # A canary's pods are asked the probe on their own address.
                "podIP": status.get("podIP"),
                "conditions": [
                    {k: c.get(k) for k in ("type", "status", "reason", "message") if k in c}
                    for c in status.get("conditions") or []
                ],
                "containerStatuses": [
                    _trim_container(c) for c in status.get("containerStatuses") or []
                ],
            },
        }
    )
    return trimmed


def _trim_secret(secret: Manifest) -> Manifest:
    metadata = secret.get("metadata") or {}
    return {"metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")}}


def _body(obj: Manifest) -> Manifest:
    """One of our objects as the stores keep it: without managedFields (the largest part of a
    real object) nor the copy of the whole spec that releases running on kopf annotated, its
    strings shared with the other kept objects (`drift.compact`)."""
    copied = dict(obj)
    metadata = dict(copied.get("metadata") or {})
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations")
    if annotations:
        metadata["annotations"] = {
            k: v for k, v in annotations.items() if not k.startswith(f"{PREFIX}/last-handled")
        }
    copied["metadata"] = metadata
    compacted: Manifest = drift.compact(copied)
    return compacted


def _by_name(obj: Manifest) -> OwnerKey:
    metadata = obj.get("metadata") or {}
    return (metadata.get("namespace") or "default", metadata.get("name", ""))


def _by_namespace(obj: Manifest) -> OwnerKey:
    return ((obj.get("metadata") or {}).get("namespace") or "default", "")


class ByNamespace(Mapping[str, list[Manifest]]):
    """Registries and ModelVersions as the runner reads them: namespace → objects."""

    def __init__(self, store: AcrossScopes) -> None:
        self.store = store

    def __getitem__(self, namespace: str) -> list[Manifest]:
        return self.store[(namespace, "")]

    def __contains__(self, namespace: object) -> bool:
        return (namespace, "") in self.store

    def __iter__(self) -> Iterator[str]:
        for namespace, _ in self.store:
            yield namespace

    def __len__(self) -> int:
        return len(self.store)


@dataclass
class Seen:
    """What the handlers remember of each of our objects to tell a change worth a pass from
    a status write or a relist: generation, deletion, and a Model's template."""

    generations: dict[tuple[str, Key], tuple[Any, Any]]
    templates: dict[Key, str]
    models_by_template: dict[Key, set[str]]

    def changed(self, kind: str, key: Key, event: str, obj: Manifest) -> bool:
        """A new object, a new spec (generation), a deletion begun or done."""
        if event == "DELETED":
            self.generations.pop((kind, key), None)
            return True
        metadata = obj.get("metadata") or {}
        now = (metadata.get("generation"), bool(metadata.get("deletionTimestamp")))
        before = self.generations.get((kind, key))
        self.generations[(kind, key)] = now
        return before != now

    def template_of(self, key: Key, event: str, obj: Manifest) -> tuple[str | None, str | None]:
        """A Model's template before and after this event, its index kept up to date."""
        before = self.templates.get(key)
        after = None if event == "DELETED" else ((obj.get("spec") or {}).get("template") or None)
        if before == after:
            return before, after
        if before is not None:
            names = self.models_by_template.get((key[0], before))
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self.models_by_template[(key[0], before)]
            del self.templates[key]
        if after is not None:
            self.templates[key] = after
            self.models_by_template.setdefault((key[0], after), set()).add(key[1])
        return before, after


def _own_informers(runner: Runner, kube: Kube, scopes: list[str | None]) -> list[Informer]:
    """Informers of Models, ModelTemplates, Registries and ModelVersions, and what their
    events ask of the runner."""
    seen = Seen({}, {}, {})

    def model(event: str, key: OwnerKey, obj: Manifest) -> None:
        before, after = seen.template_of(key, event, obj)
        if before != after:
            for template in (before, after):
                if template:
                    runner.template_soon((key[0], template), debounce=True)
        if event == "DELETED":
            runner.forget("Model", key)
            runner.model_soon(key)
        elif not runner.is_echo("Model", key, obj):
            runner.model_soon(key)

    def template(event: str, key: OwnerKey, obj: Manifest) -> None:
        echo = event != "DELETED" and runner.is_echo("ModelTemplate", key, obj)
        if seen.changed("ModelTemplate", key, event, obj) or not echo:
            runner.template_soon(key)
        if event == "DELETED" or runner.template_changed_for_models(key, obj):
            for name in runner.models_using_template(*key):
                runner.model_soon((key[0], name))

    def registry(event: str, group: OwnerKey, obj: Manifest) -> None:
        key = _by_name(obj)
        if seen.changed("Registry", key, event, obj):
            runner.registry_soon(key)
        # Models take their pull Secret and image host from the Registry.
        for name in runner.models_in_namespace(key[0]):
            runner.model_soon((key[0], name))

    def version(event: str, group: OwnerKey, obj: Manifest) -> None:
        key = _by_name(obj)
        if seen.changed("ModelVersion", key, event, obj):
            runner.version_soon(key)
        # A duplicate of it may now own its version; Models may roll to it.
        for other in runner.same_version(key, dict(obj.get("spec") or {})):
            runner.version_soon((key[0], other["metadata"]["name"]))
        for name in runner.models_in_namespace(key[0]):
            runner.model_soon((key[0], name))

    handlers = {
        "Model": (model, _by_name),
        "ModelTemplate": (template, _by_name),
        "Registry": (registry, _by_namespace),
        "ModelVersion": (version, _by_namespace),
    }
    stores: dict[str, list[Informer]] = {}
    for kind, (on_change, group) in handlers.items():
        stores[kind] = [
            Informer(
                kube,
                path(API_VERSION, kind, namespace),
                "",
                group=group,
                trim=_body,
                on_change=on_change,
                absent_recheck=OWN_KIND_RECHECK,
                idle=runner.config.watch_idle_seconds,
            )
            for namespace in scopes
        ]
    runner.indices = {
        "model_bodies": AcrossScopes(stores["Model"]),
        "template_bodies": AcrossScopes(stores["ModelTemplate"]),
        "registry_bodies": ByNamespace(AcrossScopes(stores["Registry"])),
        "version_bodies": ByNamespace(AcrossScopes(stores["ModelVersion"])),
        "models_by_template": seen.models_by_template,
    }
    return [informer for each in stores.values() for informer in each]


def _child_informers(runner: Runner, kube: Kube, scopes: list[str | None]) -> list[Informer]:
    informers: dict[str, list[Informer]] = {}
    for kind, api_version in WATCHED_CHILDREN.items():

        def changed(event: str, owner: OwnerKey, obj: Manifest, kind: str = kind) -> None:
            if not owner[1]:
                return  # our label without a Model's name: not ours to reconcile
            if event == "DELETED":
                # By its own name: a Model's canary Deployment is not its Deployment.
                runner.forget(kind, (owner[0], (obj.get("metadata") or {}).get("name", "")))
            elif runner.is_echo(kind, owner, obj):
                return
            runner.model_soon(owner)

        trim = _trim_pod if kind == "Pod" else drift.packed
        informers[kind] = [
            Informer(
                kube,
                path(api_version, kind, namespace),
                SELECTOR,
                owner_label=MODEL_LABEL,
                trim=trim,
                on_change=changed,
                idle=runner.config.watch_idle_seconds,
            )
            for namespace in scopes
        ]
    runner.children = {kind: AcrossScopes(each) for kind, each in informers.items()}

    def secret_changed(event: str, owner: OwnerKey, obj: Manifest) -> None:
        runner.secret_changed(owner[0], (obj.get("metadata") or {}).get("name", ""), event)

    # Only the Secrets whose owners let modelyard use them, and of those only their names:
    # the thousands of other Secrets of a cluster (Helm releases, service account tokens)
    # cost the operator no memory and no passes. Their data is read when used.
    secrets = [
        Informer(
            kube,
            path("v1", "Secret", namespace),
            f"{CONSENT_LABEL}={CONSENT_VALUE}",
            owner_label=CONSENT_LABEL,
            trim=_trim_secret,
            on_change=secret_changed,
            idle=runner.config.watch_idle_seconds,
        )
        for namespace in scopes
    ]
    runner.consenting = AcrossScopes(secrets)
    return [informer for each in [*informers.values(), secrets] for informer in each]


@dataclass(frozen=True)
class Options:
    """`modelyard run`'s flags."""

    namespaces: list[str]
    liveness: str | None = None
    leader_elect: bool = False
    leader_elect_namespace: str | None = None


def lease_namespace(given: str | None) -> str:
    """The operator's own namespace: the flag, the chart's POD_NAMESPACE, or the pod's."""
    if given:
        return given
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        raise SystemExit(
            "error: --leader-elect needs the namespace of its Lease: run in a pod, set "
            "POD_NAMESPACE, or pass --leader-elect-namespace"
        ) from None


def identity() -> str:
    """Unique per process, and says which pod: the Lease's holder and our User-Agent."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


async def _health(liveness: str, ready: asyncio.Event, runner: Runner) -> web.AppRunner:
    """/healthz answers while the process runs; /readyz once its stores are filled (a
    standby is ready too: it is ready to take over)."""
    address = urlsplit(liveness)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if not ready.is_set():
            return web.Response(status=503, text="listing\n")
        return web.Response(text="leading\n" if runner.leading else "standing by\n")

    app = web.Application()
    app.router.add_get(address.path or "/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    served = web.AppRunner(app, access_log=None)
    await served.setup()
    await web.TCPSite(served, address.hostname or "0.0.0.0", address.port or 8080).start()
    return served


def _election(
    runner: Runner, durations: operator_config.LeaderElection, namespace: str, me: str
) -> LeaderElection:
    """The runner leads while this process holds the Lease; writes need both."""
    election = LeaderElection(
        runner.kube,
        namespace,
        LEASE_NAME,
        me,
        Durations(
            durations.lease_duration_seconds,
            durations.renew_deadline_seconds,
            durations.retry_period_seconds,
        ),
        started=runner.lead,
        stopped=runner.stand_by,
    )
    runner.kube.write_allowance = lambda: election.write_allowance() if runner.leading else 0.0
    metrics.LEADER.set(0)
    return election


async def _shut_down(
    runner: Runner,
    election: LeaderElection | None,
    electing: asyncio.Task[None] | None,
    tasks: list[asyncio.Task[Any]],
) -> None:
    """Writes stop first, then the Lease is given up, then everything else."""
    started = time.monotonic()
    runner.stand_by()
    if election is not None and electing is not None:
        # Its loop stops first: a renewal racing the release could take the Lease back.
        electing.cancel()
        await asyncio.gather(electing, return_exceptions=True)
        await election.release()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.kube.close()
    logger.info("stopped in %.2f s", time.monotonic() - started)


async def _listen(
    options: Options,
    config: operator_config.OperatorConfig,
    ready: asyncio.Event,
    runner: Runner,
) -> web.AppRunner | None:
    """/healthz and /readyz (with --liveness), and /metrics; None without health checks.

    A port taken — a second operator on the same machine, another program — is one line that
    names the port and how to move it, not a traceback."""
    health = None
    port = "the health port (--liveness)"
    try:
        if options.liveness:
            health = await _health(options.liveness, ready, runner)
        port = f"the metrics port {config.metrics_port} (metricsPort in the configuration; 0: off)"
        if config.metrics_port:
            metrics.serve(config.metrics_port)
    except OSError as error:
        if health is not None:
            await health.cleanup()
        await runner.kube.close()
        raise SystemExit(f"modelyard: cannot listen on {port}: {error.strerror or error}") from None
    return health


async def operate(options: Options) -> None:
    """Run until SIGTERM or SIGINT; a leader gives its Lease up on the way out."""
    config = operator_config.load()
    me = identity()
    lease_ns = lease_namespace(options.leader_elect_namespace) if options.leader_elect else ""
    # First: a stop asked for while logging in (an exec plugin may take seconds) is a stop,
    # not a traceback.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    # client-go's liveness (a PING after 30 s of silence, 15 s for its answer), shortened with
    # watchIdleSeconds: a connection is found dead before its watches' own limit runs out.
    kube = Kube(
        kube_login.login,
        config.field_manager,
        user_agent=f"modelyard/{me}",
        ping_after=min(30.0, config.watch_idle_seconds / 3),
        ping_timeout=min(15.0, config.watch_idle_seconds / 3),
    )
    try:
        server = await kube.server()
    except kube_login.LoginError as error:
        raise SystemExit(f"modelyard: {error}") from None
    if stopping.is_set():
        await kube.close()
        return
    egress = EgressPolicy(
        config.external_models,
        await with_addresses(api_server_endpoints(server, dict(os.environ))),
    )
    runner = Runner(kube, config, egress)
    scopes: list[str | None] = [*options.namespaces] if options.namespaces else [None]
    informers = _own_informers(runner, kube, scopes) + _child_informers(runner, kube, scopes)
    ready = asyncio.Event()
    health = await _listen(options, config, ready, runner)
    died: list[str] = []
    tasks = _start_tasks(informers, runner, stopping, died)
    election: LeaderElection | None = None
    electing: asyncio.Task[None] | None = None
    try:
        # Passes start only once every store is filled: a pass must see the children that
        # already exist, or a restart would re-apply every child.
        synced: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(informer.synced.wait() for informer in informers))
        )
        waiting: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([synced, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if stopping.is_set():
            synced.cancel()
            await asyncio.gather(synced, return_exceptions=True)
        else:
            ready.set()
            logger.info(
                "watching %s: %d objects listed",
                ", ".join(options.namespaces) or "all namespaces",
                sum(len(group) for informer in informers for group in informer.by_owner.values()),
            )
            if options.leader_elect:
                election = _election(runner, config.leader_election, lease_ns, me)
                electing = _supervised(
                    asyncio.create_task(election.run()), "the leader election", stopping, died
                )
            else:
                kube.write_allowance = lambda: math.inf if runner.leading else 0.0
                metrics.LEADER.set(1)
                runner.lead()
            await stopping.wait()
    finally:
        await _shut_down(runner, election, electing, tasks)
        if health is not None:
            await health.cleanup()
    if died:
        raise SystemExit(f"modelyard: stopped because {', '.join(died)} ended")


def _start_tasks(
    informers: list[Informer], runner: Runner, stopping: asyncio.Event, died: list[str]
) -> list[asyncio.Task[Any]]:
    """Everything that runs for the process's life, supervised."""
    works = [(informer.run(), f"watching {informer.url}") for informer in informers]
    works += [
        (runner.release_memory(), "releasing memory"),
        (runner.prober.run(), "the prober"),
        (runner.checks(), "the periodic checks"),
    ]
    return [_supervised(asyncio.create_task(work), what, stopping, died) for work, what in works]


def _supervised(
    task: asyncio.Task[Any], what: str, stopping: asyncio.Event, died: list[str]
) -> asyncio.Task[Any]:
    """`task` must run until the operator stops: each catches and retries its own failures,
    so one that ends anyway is a bug, and a process half alive (a store frozen, an election
    gone while /readyz and modelyard_leader still say it leads) is worse than a restart. The
    process stops, non-zero, and its pod is restarted."""

    def ended(done: asyncio.Task[Any]) -> None:
        if stopping.is_set() or done.cancelled():
            return
        error = done.exception()
        logger.error(
            "%s ended (%s); stopping so that the operator is restarted",
            what,
            f"{type(error).__name__}: {error}" if error else "returned",
            exc_info=error,
        )
        died.append(what)
        stopping.set()

    task.add_done_callback(ended)
    return task


#: A `parameters` map as it appears in a logged dict repr, JSON, or JSON inside a repr'd string.
_PARAMETERS = re.compile(r"""(['"\\]*parameters['"\\]*\s*:\s*)\{[^{}]*\}""")


class RedactParameters(logging.Filter):
    """Keeps Model parameters out of every log line.

    A Model's parameters may hold a secret pasted in by mistake; our own code never logs them,
    but a library logging a request body at debug level could. Installed on the log handler,
    so it applies to every logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "parameters" in message:
            record.msg, record.args = _PARAMETERS.sub(r"\1{<redacted>}", message), None
        return True


LOG_FORMAT = "[%(asctime)s] %(levelname)-7s %(name)s: %(message)s"


def run(options: Options, verbose: bool) -> None:
    """Run the operator in this process until it is stopped."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactParameters())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # aiohttp's and asyncio's debug chatter is not the operator's story.
    for noisy in ("asyncio", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        asyncio.run(operate(options))
    except KeyboardInterrupt:
        # Ctrl-C before the operator's own handler was in place (while Python starts).
        raise SystemExit(130) from None


__all__ = ["Options", "run"]
