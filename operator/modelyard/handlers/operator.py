"""kopf registration only: indices, one reconcile per kind, and the events that trigger them.

Everything the reconcilers read is in memory, so a reconcile makes no GET requests: our own
kinds come from kopf's indices below; the children (Deployments, Services, autoscalers, pods)
from the informers of `modelyard.kube.informer`, which list and watch only objects with the
`app.kubernetes.io/managed-by=modelyard` label and keep only the fields the reconcilers read.
Each child event asks for a pass over the Model named in its `modelyard.dev/model` label: status
follows reality without polling. Template, Registry and ModelVersion events fan out to the
Models that depend on them.

Models are level-based: every event of a Model asks for a pass (the pass itself decides whether
anything must be written), so kopf needs to persist nothing per Model — no diff-base annotation,
no progress, no finalizer — and the watch echo of our own status write is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import kopf

from modelyard import config as operator_config
from modelyard import metrics
from modelyard.builders import drift
from modelyard.builders.labels import MANAGED_BY, MODEL_LABEL, SPEC_HASH_ANNOTATION
from modelyard.kube import ApiError, Kube, Manifest, path
from modelyard.kube import login as kube_login
from modelyard.kube.informer import AcrossScopes, Informer
from modelyard.reconcile.runner import Indices, Runner
from modelyard.registry.credentials import CONSENT_LABEL, CONSENT_VALUE
from modelyard.registry.egress import EgressPolicy, api_server_endpoints

GROUP, VERSION = "modelyard.dev", "v1alpha1"
PREFIX = "modelyard.dev"

logger = logging.getLogger("modelyard")
#: The namespaces served (`--namespace`); empty for the whole cluster. Set by `run`.
NAMESPACES: list[str] = []


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's watches use the same credentials as our own client (`modelyard.kube.login`)."""
    try:
        found = kube_login.login()
    except kube_login.LoginError as error:
        raise kopf.LoginError(str(error)) from None
    return kopf.ConnectionInfo(
        server=found.server,
        token=found.token,
        username=found.username,
        password=found.password,
        ca_path=found.ca_path,
        ca_data=found.ca_data,
        certificate_path=found.certificate_path,
        certificate_data=found.certificate_data,
        private_key_path=found.private_key_path,
        private_key_data=found.private_key_data,
        insecure=found.insecure,
    )


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
                "deletionTimestamp": meta.get("deletionTimestamp"),
            },
            "status": {
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


def _start_informers(runner: Runner, kube: Kube, namespaces: list[str]) -> list[Informer]:
    informers: dict[str, list[Informer]] = {}
    scopes: list[str | None] = [*namespaces] if namespaces else [None]
    for kind, api_version in WATCHED_CHILDREN.items():

        def changed(event: str, owner: tuple[str, str], obj: Manifest, kind: str = kind) -> None:
            if event == "DELETED":
                runner.forget(kind, owner)
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
            )
            for namespace in scopes
        ]
    runner.children = {kind: AcrossScopes(each) for kind, each in informers.items()}

    def secret_changed(event: str, owner: tuple[str, str], obj: Manifest) -> None:
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
        )
        for namespace in scopes
    ]
    runner.consenting = AcrossScopes(secrets)
    return [informer for each in [*informers.values(), secrets] for informer in each]


def _trim_secret(secret: Manifest) -> Manifest:
    metadata = secret.get("metadata") or {}
    return {"metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")}}


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Operator settings, the one API client of the process, and the children's informers."""
    config = operator_config.load()
    # kopf's bookkeeping lives under our own prefix, not kopf.zalando.org.
    settings.persistence.finalizer = f"{PREFIX}/kopf-finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Our own Events say what matters; kopf's per-handler "succeeded" Events would be one
    # extra API write per reconcile. Its warnings and errors are still posted.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    kube = Kube(kube_login.login, config.field_manager)
    egress = EgressPolicy(
        config.external_models, api_server_endpoints(kube_login.login().server, dict(os.environ))
    )
    runner = Runner(kube, config, egress)
    memo.runner = runner
    informers = _start_informers(runner, kube, NAMESPACES)
    memo.informer_tasks = [asyncio.create_task(informer.run()) for informer in informers]
    memo.informer_tasks.append(asyncio.create_task(runner.release_memory()))
    memo.informer_tasks.append(asyncio.create_task(runner.prober.run()))
    # Models resume as soon as this returns: they must see the children that already exist,
    # or a restart would re-apply every child.
    await asyncio.wait_for(
        asyncio.gather(*(informer.synced.wait() for informer in informers)), timeout=120
    )
    if config.metrics_port:
        metrics.serve(config.metrics_port)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in getattr(memo, "informer_tasks", []):
        task.cancel()
    runner: Runner | None = getattr(memo, "runner", None)
    if runner is not None:
        await runner.kube.close()


def _runner(memo: kopf.Memo, indices: dict[str, Any]) -> Runner:
    runner: Runner = memo.runner
    runner.remember(
        {
            name: index
            for name, index in indices.items()
            if name.endswith(("_bodies", "_by_template"))
        }
    )
    return runner


def _retry(problem: ApiError) -> kopf.TemporaryError | kopf.PermanentError:
    if problem.temporary:
        return kopf.TemporaryError(str(problem), delay=problem.retry_after or 5)
    return kopf.PermanentError(str(problem))


def _ns(namespace: str | None) -> str:
    """Every modelyard kind is namespaced; kopf's signatures still allow None."""
    return namespace or "default"


def _body(body: kopf.Body) -> dict[str, Any]:
    """The object for an index, without managedFields (the largest part of a real object) nor
    kopf's own annotations (a copy of the whole spec, left by earlier versions), its strings
    shared with the other kept objects (`drift.compact`)."""
    copied = dict(body)
    metadata = dict(copied.get("metadata") or {})
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations")
    if annotations:
        metadata["annotations"] = {
            k: v for k, v in annotations.items() if not k.startswith(f"{PREFIX}/last-handled")
        }
    copied["metadata"] = metadata
    compacted: dict[str, Any] = drift.compact(copied)
    return compacted


# -- indices: the operator's read model -------------------------------------------------------
# Coroutines, though they await nothing: kopf runs plain functions in a thread pool, which costs
# a thread hop per event.


@kopf.index(GROUP, VERSION, "models")
async def model_bodies(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return {(_ns(namespace), name): _body(body)}


@kopf.index(GROUP, VERSION, "models")
async def models_by_template(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Any, Any]:
    return {(_ns(namespace), spec.get("template")): name}


@kopf.index(GROUP, VERSION, "modeltemplates")
async def template_bodies(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return {(_ns(namespace), name): _body(body)}


@kopf.index(GROUP, VERSION, "registries")
async def registry_bodies(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {_ns(namespace): _body(body)}


@kopf.index(GROUP, VERSION, "modelversions")
async def version_bodies(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {_ns(namespace): _body(body)}


# -- Models -----------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "models")
async def model_event(
    *,
    namespace: str | None,
    name: str,
    type: str | None,
    body: kopf.Body,
    spec: kopf.Spec,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Any change of a Model (or its first sight after a restart): look at it again, unless it
    is the echo of our own status write. Its template's list of Models may change too."""
    runner = _runner(memo, kwargs)
    key = (_ns(namespace), name)
    if spec.get("template") and type in (None, "ADDED", "DELETED"):
        runner.template_soon((key[0], spec["template"]))
    if type == "DELETED":
        runner.forget("Model", key)
        runner.model_soon(key)
    elif not runner.is_echo("Model", key, body):
        runner.model_soon(key)


# -- ModelTemplates ---------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "modeltemplates")
@kopf.on.create(GROUP, VERSION, "modeltemplates")
@kopf.on.update(GROUP, VERSION, "modeltemplates", field="spec")
async def template_changed(
    namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    runner = _runner(memo, kwargs)
    try:
        await runner.template_now((_ns(namespace), name))
    except ApiError as problem:
        raise _retry(problem) from None
    for model in runner.models_using_template(_ns(namespace), name):
        runner.model_soon((_ns(namespace), model))


@kopf.on.event(GROUP, VERSION, "modeltemplates")
async def template_seen(
    namespace: str | None,
    name: str,
    meta: kopf.Meta,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Status changes (a resolved digest) and deletions also matter to the Models."""
    runner = _runner(memo, kwargs)
    if meta.get("deletionTimestamp"):
        runner.template_soon((_ns(namespace), name))
    if runner.template_changed_for_models((_ns(namespace), name), body):
        for model in runner.models_using_template(_ns(namespace), name):
            runner.model_soon((_ns(namespace), model))


# -- Registries ------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "registries")
@kopf.on.create(GROUP, VERSION, "registries")
@kopf.on.update(GROUP, VERSION, "registries", field="spec")
async def registry_changed(
    namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    try:
        await _runner(memo, kwargs).registry_now((_ns(namespace), name))
    except ApiError as problem:
        raise _retry(problem) from None


#: How often a waiting check looks at its interval again.
INTERVAL_STEP = 5.0


async def _interval(stopped: kopf.DaemonStopped, interval: Callable[[], float]) -> None:
    """Wait one check interval, read again as it goes: a daemon starting before its Registry's
    first check would otherwise wait the default 300 s, whatever checkIntervalSeconds says,
    and an edited interval would only count from the next round."""
    waited = 0.0
    while not stopped and waited < interval():
        step = min(INTERVAL_STEP, interval() - waited)
        await stopped.wait(step)
        waited += step


@kopf.daemon(GROUP, VERSION, "registries", cancellation_timeout=1.0)
async def registry_checks(
    stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Re-check every checkIntervalSeconds; a check that finds nothing new writes nothing."""
    runner = _runner(memo, kwargs)
    key = (_ns(namespace), name)
    while not stopped:
        await _interval(stopped, lambda: runner.check_interval(key))
        if not stopped:
            runner.registry_soon(key)


# -- ModelVersions ----------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "modelversions")
@kopf.on.create(GROUP, VERSION, "modelversions")
async def version_changed(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    try:
        await _runner(memo, kwargs).version_now((_ns(namespace), name))
    except ApiError as problem:
        raise _retry(problem) from None


@kopf.daemon(GROUP, VERSION, "modelversions", cancellation_timeout=1.0)
async def version_checks(
    stopped: kopf.DaemonStopped,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Re-verify as often as the Registry is checked: a moved tag or a deleted digest shows."""
    runner = _runner(memo, kwargs)
    key = (_ns(namespace), name)
    while not stopped:
        await _interval(stopped, lambda: runner.check_interval((key[0], spec.get("registry", ""))))
        if not stopped:
            runner.version_soon(key)


@kopf.on.event(GROUP, VERSION, "modelversions")
async def version_seen(
    namespace: str | None,
    name: str,
    type: str | None,
    spec: kopf.Spec,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Models may roll to it; a duplicate of it may now own its version; once deleted, what
    the operator kept about it goes."""
    runner = _runner(memo, kwargs)
    if type == "DELETED":
        runner.version_soon((_ns(namespace), name))
    for other in runner.same_version((_ns(namespace), name), dict(spec)):
        runner.version_soon((_ns(namespace), other["metadata"]["name"]))
    for model in runner.models_in_namespace(_ns(namespace)):
        runner.model_soon((_ns(namespace), model))


@kopf.on.event(GROUP, VERSION, "registries")
async def registry_seen(
    namespace: str | None, name: str, type: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Models take their pull Secret and image host from the Registry; once deleted, its
    connection and what the operator kept about it go."""
    runner = _runner(memo, kwargs)
    if type == "DELETED":
        runner.registry_soon((_ns(namespace), name))
    for model in runner.models_in_namespace(_ns(namespace)):
        runner.model_soon((_ns(namespace), model))


#: A `parameters` map as it appears in a logged dict repr, JSON, or JSON inside a repr'd string.
_PARAMETERS = re.compile(r"""(['"\\]*parameters['"\\]*\s*:\s*)\{[^{}]*\}""")


class RedactParameters(logging.Filter):
    """Keeps Model parameters out of every log line.

    kopf logs whole bodies and patches at debug level, and a Model's parameters may hold a
    secret pasted in by mistake (our own code never logs them). Installed on the log handlers,
    so it applies to every logger, kopf's included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "parameters" in message:
            record.msg, record.args = _PARAMETERS.sub(r"\1{<redacted>}", message), None
        return True


def run(namespaces: list[str], liveness: str | None, verbose: bool) -> None:
    """Run the operator in this process until it is stopped."""
    # kopf installs the one log handler (with its format); a second one from basicConfig
    # printed every record twice. The filter goes on whatever handlers there are afterwards.
    NAMESPACES[:] = namespaces
    kopf.configure(verbose=verbose)
    if not verbose:
        # kopf says "Handler 'model_event' succeeded" for every event (441 lines for 100
        # Models); at the default level only its warnings and errors show, and the operator's
        # own lines say what changed.
        logging.getLogger("kopf").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactParameters())
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )


__all__ = ["Indices", "run"]
