"""kopf registration only: indices, one reconcile per kind, and the events that trigger them.

Everything the reconcilers read comes from the indices below, kept current by kopf's watches, so
a reconcile makes no GET requests. Children (Deployments, Services, autoscalers, pods) are watched
through the `app.kubernetes.io/managed-by=modelyard` label and each of their events asks for a
pass over the Model named in their `modelyard.dev/model` label: status follows reality without
polling. Template, Registry and ModelVersion events fan out to the Models that depend on them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging
import re
from typing import Any

import kopf

from modelyard import config as operator_config
from modelyard import metrics
from modelyard.builders.labels import MANAGED_BY, MODEL_LABEL, SPEC_HASH_ANNOTATION
from modelyard.kube import CONCURRENCY, ApiError, Kube
from modelyard.reconcile.runner import Indices, Runner

GROUP, VERSION = "modelyard.dev", "v1alpha1"
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
PREFIX = "modelyard.dev"

logger = logging.getLogger("modelyard")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Operator settings, and the one API client of the process."""
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
    # The API client is synchronous and runs in worker threads: asyncio's default pool has
    # min(32, cores + 4) threads, 6 on 2 cores, far fewer than the calls a burst of Models makes.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="kube")
    )
    memo.runner = Runner(Kube.from_environment(config.field_manager), config)
    if config.metrics_port:
        metrics.serve(config.metrics_port)


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
    """A copy for an index, without managedFields: the largest part of a real object, unused."""
    copied = copy.deepcopy(dict(body))
    metadata = dict(copied.get("metadata") or {})
    metadata.pop("managedFields", None)
    copied["metadata"] = metadata
    return copied


# -- indices: the operator's read model -------------------------------------------------------


@kopf.index(GROUP, VERSION, "models")
def model_bodies(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(_ns(namespace), name): _body(body)}


@kopf.index(GROUP, VERSION, "models")
def models_by_template(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Any, Any]:
    return {(_ns(namespace), spec.get("template")): name}


@kopf.index(GROUP, VERSION, "modeltemplates")
def template_bodies(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(_ns(namespace), name): _body(body)}


@kopf.index(GROUP, VERSION, "registries")
def registry_bodies(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {_ns(namespace): _body(body)}


@kopf.index(GROUP, VERSION, "modelversions")
def version_bodies(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {_ns(namespace): _body(body)}


def _owner(namespace: str | None, labels: kopf.Labels) -> tuple[str, str]:
    return (_ns(namespace), labels.get(MODEL_LABEL, ""))


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
def deployment_bodies(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return {_owner(namespace, labels): _body(body)}


@kopf.index("", "v1", "services", labels=MANAGED)
def service_bodies(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return {_owner(namespace, labels): _body(body)}


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers", labels=MANAGED)
def hpa_bodies(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return {_owner(namespace, labels): _body(body)}


@kopf.index("keda.sh", "v1alpha1", "scaledobjects", labels=MANAGED)
def scaledobject_bodies(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return {_owner(namespace, labels): _body(body)}


@kopf.index("", "v1", "pods", labels=MANAGED)
def pod_bodies(
    namespace: str | None, labels: kopf.Labels, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> dict[Any, Any]:
    """Only what decides a Model's state, to keep memory flat with thousands of pods."""
    annotations = meta.get("annotations") or {}
    trimmed = {
        "metadata": {
            "name": meta.get("name"),
            "annotations": {SPEC_HASH_ANNOTATION: annotations.get(SPEC_HASH_ANNOTATION)},
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "status": {
            "conditions": copy.deepcopy(status.get("conditions") or []),
            "containerStatuses": copy.deepcopy(status.get("containerStatuses") or []),
        },
    }
    return {_owner(namespace, labels): trimmed}


# -- Models -----------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "models")
@kopf.on.create(GROUP, VERSION, "models")
@kopf.on.update(GROUP, VERSION, "models", field="spec")
async def model_changed(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    runner = _runner(memo, kwargs)
    try:
        await runner.model_now((_ns(namespace), name))
    except ApiError as problem:
        raise _retry(problem) from None


@kopf.on.event(GROUP, VERSION, "models")
async def model_seen(
    namespace: str | None, spec: kopf.Spec, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A Model came or went: its template's list of Models changes."""
    if spec.get("template"):
        _runner(memo, kwargs).template_soon((_ns(namespace), spec["template"]))


# -- children: status follows reality ---------------------------------------------------------


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "pods", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=MANAGED)
@kopf.on.event("keda.sh", "v1alpha1", "scaledobjects", labels=MANAGED)
async def child_changed(
    namespace: str | None,
    labels: kopf.Labels,
    type: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    model = labels.get(MODEL_LABEL)
    if model:
        runner = _runner(memo, kwargs)
        if type == "DELETED":
            runner.forget(str(body.get("kind")), (_ns(namespace), model))
        runner.model_soon((_ns(namespace), model))


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


@kopf.daemon(GROUP, VERSION, "registries", cancellation_timeout=1.0)
async def registry_checks(
    stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Re-check every checkIntervalSeconds; a check that finds nothing new writes nothing."""
    runner = _runner(memo, kwargs)
    key = (_ns(namespace), name)
    while not stopped:
        await stopped.wait(runner.check_interval(key))
        if not stopped:
            runner.registry_soon(key)


@kopf.on.event("", "v1", "secrets")
async def secret_changed(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """An edited credentials or CA Secret is picked up by the Registries that name it."""
    runner = _runner(memo, kwargs)
    for registry in runner.registries_using_secret(_ns(namespace), name):
        runner.registry_soon((_ns(namespace), registry))


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
        await stopped.wait(runner.check_interval((key[0], spec.get("registry", ""))))
        if not stopped:
            runner.version_soon(key)


@kopf.on.event(GROUP, VERSION, "modelversions")
async def version_seen(
    namespace: str | None, name: str, spec: kopf.Spec, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Models may roll to it; a duplicate of it may now own its version."""
    runner = _runner(memo, kwargs)
    for other in runner.same_version((_ns(namespace), name), dict(spec)):
        runner.version_soon((_ns(namespace), other["metadata"]["name"]))
    for model in runner.models_in_namespace(_ns(namespace)):
        runner.model_soon((_ns(namespace), model))


@kopf.on.event(GROUP, VERSION, "registries")
async def registry_seen(namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """Models take their pull Secret and image host from the Registry."""
    runner = _runner(memo, kwargs)
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
    kopf.configure(verbose=verbose)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactParameters())
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )


__all__ = ["Indices", "run"]
