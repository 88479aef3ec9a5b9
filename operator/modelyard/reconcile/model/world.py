"""What one pass over a Model reads (`ModelWorld`, filled from the indices by the runner) and
what it tells the runner back (`Outcome`): kept apart so that every step of the pass takes
the same two shapes, and the runner needs nothing else of the package."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modelyard.api.v1alpha1 import (
    MlflowResolution,
    Model,
    parse,
)
from modelyard.builders import labels
from modelyard.builders.plan import Plan
from modelyard.reconcile.common import (
    describe,
)
from modelyard.reconcile.indices import Indices, Key, every, first
from modelyard.registry.credentials import CONSENT_VALUE
from modelyard.status import conditions, reasons

Manifest = dict[str, Any]
KEDA_GROUP_VERSION, KEDA_PLURAL = "keda.sh/v1alpha1", "scaledobjects"


#: What an external Model must not have (it ran here before its spec changed).
WORKLOAD_KINDS = (
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    (KEDA_GROUP_VERSION, "ScaledObject"),
)


@dataclass
class ModelWorld:
    """What the operator's indices hold about one Model and everything it refers to."""

    model: Manifest
    template: Manifest | None
    registries: list[Manifest] = field(default_factory=list)
    versions: list[Manifest] = field(default_factory=list)
    #: Live children by kind ("Deployment", "Service", "HorizontalPodAutoscaler", "ScaledObject").
    children: dict[str, Manifest] = field(default_factory=dict)
    #: The Model's canary Deployment, while a canary rollout runs one.
    canary: Manifest | None = None
    pods: list[Manifest] = field(default_factory=list)
    #: The pods pulling a new revision's weights onto the serving workers' nodes.
    warm_pods: list[Manifest] = field(default_factory=list)
    #: The namespace's Secrets that consent to modelyard's use; None: not checked.
    permitted_secrets: frozenset[str] | None = None

    def mlflow_inputs(self, model: Model, version: str | None) -> tuple[str, ...]:
        """The columns the signature of the Model's `version` requires, as its Ready
        ModelVersion recorded them (`status.mlflow.signature`); none without one."""
        selector = model.spec.version
        if selector is None or not version:
            return ()
        for manifest in self.versions:
            spec = manifest.get("spec") or {}
            status = manifest.get("status") or {}
            if (
                spec.get("model") != selector.model
                or spec.get("version") != version
                or not status.get("mlflow")
                or not conditions.is_true(status.get("conditions"), reasons.READY)
            ):
                continue
            try:
                return MlflowResolution.model_validate(status["mlflow"]).required_inputs()
            except ValidationError:
                return ()
        return ()


@dataclass
class Outcome:
    state: str | None
    reason: str
    applied: int = 0
    deleted: int = 0
    status_written: bool = False
    #: Objects as our writes returned them (children applied, the Model after its status
    #: write), so the next pass can use them before the watch brings them back.
    written: list[Manifest] = field(default_factory=list)
    #: Only the Deployment was applied (`first_turn`): the rest needs another pass.
    unfinished: bool = False
    #: A child the API server refused (quota, policy, invalid, server error): the status says
    #: so, and the pass is retried with backoff until the cause is lifted.
    refused: conditions.Check | None = None
    #: The Autoscaling condition's (status, reason), for the metrics.
    autoscaling: tuple[str, str] | None = None
    #: Ask for another pass after this many seconds (a canary's analysis ends then).
    recheck_after: float | None = None
    #: Children deleted by name, (kind, (namespace, name)), so nothing kept resurrects them.
    deleted_names: list[tuple[str, tuple[str, str]]] = field(default_factory=list)


def key_of(model: Model) -> tuple[str, str]:
    return (model.metadata.namespace or "default", model.metadata.name)


def read_model(body: Manifest) -> tuple[Model | None, conditions.Check | None]:
    """The Model, or why it cannot be read.

    The same reading as `modelyard render`, root rules included (a name that cannot be a
    Service name). The CRD schema makes most failures impossible; an older CRD cannot."""
    try:
        parsed = parse(body)
    except ValidationError as error:
        return None, conditions.failed(reasons.INVALID_SPEC, describe(error))
    except ValueError as error:
        return None, conditions.failed(reasons.INVALID_SPEC, str(error))
    assert isinstance(parsed, Model)
    return parsed, None


def desired_revision(plan: Plan | None) -> str:
    """The pod-template hash of the revision the plan asks for ("" without one)."""
    if plan is None or plan.children is None:
        return ""
    annotations = plan.children.deployment["spec"]["template"]["metadata"]["annotations"]
    return str(annotations[labels.SPEC_HASH_ANNOTATION])


#: The kinds a Model's children are, each watched and kept by the runner.
CHILD_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "ScaledObject")
#: The children-store kind of the pods that pull a new revision's weights onto a node before
#: its workers start (`builders.warming`): pods, under a label of their own.
WARM_PODS = "WarmPod"
#: Child kind → owning Model's key → the children (a Model's Deployment and its canary's).
Children = Mapping[str, Mapping[Key, Iterable[Manifest]]]


def model_world(
    key: Key,
    indices: Indices,
    children: Children,
    consenting: Mapping[Key, Iterable[Manifest]] | None = None,
) -> ModelWorld | None:
    """Everything about one Model, from the indices; None when the Model is gone."""
    namespace = key[0]
    body = first(indices.get("model_bodies"), key)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return None
    template_name = (body.get("spec") or {}).get("template")
    owned = {}
    canary = None
    for kind in CHILD_KINDS:
        # By name: a Model's canary Deployment carries its label too.
        for child in every(children.get(kind), key):
            name = (child.get("metadata") or {}).get("name")
            if name == key[1]:
                owned[kind] = child
            elif kind == "Deployment" and name == labels.canary_name(key[1]):
                canary = child
    return ModelWorld(
        model=body,
        template=first(indices.get("template_bodies"), (namespace, template_name)),
        registries=every(indices.get("registry_bodies"), namespace),
        versions=every(indices.get("version_bodies"), namespace),
        children=owned,
        canary=canary,
        pods=every(children.get("Pod"), key),
        warm_pods=every(children.get(WARM_PODS), key),
        permitted_secrets=None
        if consenting is None
        else frozenset(
            (secret.get("metadata") or {}).get("name", "")
            for secret in every(consenting, (namespace, CONSENT_VALUE))
        ),
    )
