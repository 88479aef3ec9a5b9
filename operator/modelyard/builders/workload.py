"""What a Model becomes: a Deployment, a Service and at most one autoscaler (docs/design.md).

`Workload` is everything already resolved (template, image by digest, env, scaling, GPU type);
the functions here only arrange it into manifests. They are the whole desired state on every
call, written with server-side apply, so a field dropped from the template disappears from the
Deployment and a hand edit is put back.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from modelyard import weights as weights_step
from modelyard.api.v1alpha1 import ModelTemplateSpec
from modelyard.builders import labels
from modelyard.config import GpuType, OperatorConfig

Manifest = dict[str, Any]

STARTUP_PROBE_PERIOD = 10


class AutoscalerKind(Enum):
    """Which autoscaler owns the replica count; exactly one, or none for a fixed size."""

    NONE = "none"
    HPA = "hpa"
    KEDA = "keda"


@dataclass(frozen=True)
class Scaling:
    min_workers: int
    max_workers: int
    per_worker: int

    @property
    def autoscaler(self) -> AutoscalerKind:
        if self.min_workers == self.max_workers:
            return AutoscalerKind.NONE
        if self.min_workers == 0:
            return AutoscalerKind.KEDA
        return AutoscalerKind.HPA


@dataclass(frozen=True)
class WeightsVerification:
    """A worker's init step over its mounted weights: `image`'s `modelyard verify-weights`
    with the weights' Registry's public keys (PEM)."""

    image: str
    public_keys: tuple[str, ...]


@dataclass(frozen=True)
class PinnedFetch:
    """A worker's init step for a version from MLflow: `image`'s `modelyard
    fetch-mlflow-weights` fetches the version's files from the tracking server (with `env`:
    its URI and the Registry's credentials, as references) into the weights path, and checks
    each against the SHA-256 pinned at verification."""

    image: str
    artifacts: str
    sha256: dict[str, str]
    size_bytes: int
    env: tuple[Manifest, ...]


@dataclass(frozen=True)
class Workload:
    """A Model with every reference resolved: the input of every builder."""

    name: str
    namespace: str | None
    template_name: str
    template: ModelTemplateSpec
    image: str
    env: list[dict[str, Any]]
    scaling: Scaling
    gpu: GpuType | None
    pull_secrets: list[str] = field(default_factory=list)
    owner_uid: str | None = None
    version: str | None = None
    #: A version's weights (`host/repository@sha256:…`), mounted at the template's
    #: weights.mountPath.
    weights: str | None = None
    weights_verification: WeightsVerification | None = None
    #: A version from MLflow whose pinned files are fetched into the weights path.
    fetch: PinnedFetch | None = None


def _metadata(workload: Workload) -> Manifest:
    metadata: Manifest = {"name": workload.name}
    if workload.namespace:
        metadata["namespace"] = workload.namespace
    metadata["labels"] = labels.child_labels(workload.name, workload.template_name)
    if workload.owner_uid:
        metadata["ownerReferences"] = [labels.owner_reference(workload.name, workload.owner_uid)]
    return metadata


def _resources(workload: Workload) -> Manifest:
    spec = workload.template.resources
    amounts: dict[str, str] = {}
    if spec.cpus is not None:
        amounts["cpu"] = spec.cpus
    if spec.memory is not None:
        amounts["memory"] = spec.memory
    if spec.storage is not None:
        amounts["ephemeral-storage"] = spec.storage
    if spec.gpus > 0:
        resource_name = workload.gpu.resource_name if workload.gpu else "nvidia.com/gpu"
        amounts[resource_name] = str(spec.gpus)
    if not amounts:
        return {}
    # Requests equal limits: a model server's footprint is known, and Guaranteed QoS keeps it
    # from being evicted first under node pressure. Extended resources (GPUs) require it anyway.
    return {"requests": dict(amounts), "limits": dict(amounts)}


WEIGHTS_VOLUME = "weights"
#: The verifier's /tmp (for the keys it hands model-signing as files): its root is read-only.
VERIFIER_SCRATCH = "verifier-tmp"

#: Seconds a terminating worker keeps serving before it is stopped (within the default 30 s
#: termination grace period).
DRAIN_SECONDS = 5


def _probes(template: ModelTemplateSpec) -> Manifest:
    readiness = template.readiness
    http_get = {"path": readiness.path, "port": labels.PORT_NAME}
    probes: Manifest = {
        "readinessProbe": {
            "httpGet": dict(http_get),
            "initialDelaySeconds": readiness.initial_delay_seconds,
            "periodSeconds": readiness.period_seconds,
            "failureThreshold": 3,
        }
    }
    if template.startup_timeout_seconds > 0:
        # The startup probe gives a loading model startupTimeoutSeconds in total (counted from
        # container start), readiness checks waiting meanwhile; then the kubelet restarts it.
        budget = max(
            template.startup_timeout_seconds - readiness.initial_delay_seconds,
            STARTUP_PROBE_PERIOD,
        )
        # The kubelet checks at the delay and every period after it; the threshold-th failed
        # check (at delay + period * (threshold - 1)) restarts the container: that one must
        # not come before the budget is spent.
        probes["startupProbe"] = {
            "httpGet": dict(http_get),
            "initialDelaySeconds": readiness.initial_delay_seconds,
            "periodSeconds": STARTUP_PROBE_PERIOD,
            "failureThreshold": math.ceil(budget / STARTUP_PROBE_PERIOD) + 1,
        }
    return probes


def _container(workload: Workload) -> Manifest:
    template = workload.template
    container: Manifest = {
        "name": labels.CONTAINER_NAME,
        "image": workload.image,
    }
    if template.command:
        container["command"] = list(template.command)
    if template.args:
        container["args"] = list(template.args)
    if workload.env:
        container["env"] = workload.env
    container["ports"] = [
        {"name": labels.PORT_NAME, "containerPort": template.port, "protocol": "TCP"}
    ]
    resources = _resources(workload)
    if resources:
        container["resources"] = resources
    if (workload.weights is not None or workload.fetch is not None) and template.weights:
        container["volumeMounts"] = [
            {"name": WEIGHTS_VOLUME, "mountPath": template.weights.mount_path, "readOnly": True}
        ]
    container.update(_probes(template))
    # A worker taken away (a rollout, a scale-down) keeps serving while the endpoints and
    # kube-proxy catch up with its removal: without it, requests sent to it in that moment are
    # refused (seen on the real node as a probe failing mid-rollout). The kubelet sleeps, so
    # the image needs no shell.
    container["lifecycle"] = {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}
    return container


def _fetcher(workload: Workload, fetch: PinnedFetch) -> Manifest:
    """The init step that fetches a version's files from MLflow into the weights path and
    checks them against their pinned SHA-256 before the runtime may read them. Named as the
    verifier of signed weights: its refusal is the Model's reason the same way."""
    template = workload.template
    assert template.weights is not None
    manifest = json.dumps(fetch.sha256, sort_keys=True, separators=(",", ":"))
    return _init_step(
        workload,
        fetch.image,
        ["fetch-mlflow-weights", template.weights.mount_path],
        env=[
            *[dict(item) for item in fetch.env],
            {"name": weights_step.ARTIFACTS_VARIABLE, "value": fetch.artifacts},
            {"name": weights_step.PINNED_BYTES_VARIABLE, "value": str(fetch.size_bytes)},
            {"name": weights_step.PINNED_VARIABLE, "value": manifest},
        ],
        mounts=[{"name": WEIGHTS_VOLUME, "mountPath": template.weights.mount_path}],
    )


def _verifier(workload: Workload, verification: WeightsVerification) -> Manifest:
    """The init step that checks the mounted files against their signature before the runtime
    may read them (`modelyard.weights`)."""
    template = workload.template
    assert template.weights is not None
    return _init_step(
        workload,
        verification.image,
        ["verify-weights", template.weights.mount_path],
        env=[{"name": weights_step.KEYS_VARIABLE, "value": "".join(verification.public_keys)}],
        mounts=[
            {"name": WEIGHTS_VOLUME, "mountPath": template.weights.mount_path, "readOnly": True},
            {"name": VERIFIER_SCRATCH, "mountPath": "/tmp"},
        ],
    )


def _init_step(
    workload: Workload,
    image: str,
    args: list[str],
    *,
    env: list[Manifest],
    mounts: list[Manifest],
) -> Manifest:
    """An init step over the weights, from the operator's own image."""
    container: Manifest = {
        "name": weights_step.VERIFIER_CONTAINER,
        "image": image,
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        # Its reason, when it refuses, is what the Model's status quotes.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # Our own image, which needs nothing more: it holds whatever a policy engine asks.
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    # Hashing gigabytes wants the worker's CPU and memory; an init container's requests count
    # only where they exceed the worker's, so this costs the pod nothing (GPUs it needs not).
    amounts = {
        name: value
        for name, value in (_resources(workload).get("requests") or {}).items()
        if name in ("cpu", "memory")
    }
    if amounts:
        container["resources"] = {"requests": dict(amounts), "limits": dict(amounts)}
    return container


def progress_deadline_seconds(template: ModelTemplateSpec, config: OperatorConfig) -> int:
    """Longer than the slowest legitimate start, so ProgressDeadlineExceeded means stuck."""
    budget = max(template.startup_timeout_seconds, template.readiness.initial_delay_seconds)
    return budget + config.progress_margin_seconds


def environment(template: ModelTemplateSpec, parameter_env: list[dict[str, Any]]) -> list[Manifest]:
    """Template env first (sorted, for a stable diff), then parameters, which win on a clash."""
    from_parameters = {item["name"] for item in parameter_env}
    env: list[Manifest] = [
        {"name": name, "value": value}
        for name, value in sorted(template.env.items())
        if name not in from_parameters
    ]
    return env + list(parameter_env)


def pod_spec(workload: Workload, config: OperatorConfig) -> Manifest:
    template = workload.template
    spec: Manifest = {"containers": [_container(workload)]}
    if workload.gpu is not None:
        if workload.gpu.node_selector:
            spec["nodeSelector"] = dict(workload.gpu.node_selector)
        if workload.gpu.tolerations:
            spec["tolerations"] = [t.manifest() for t in workload.gpu.tolerations]
    if template.high_priority:
        spec["priorityClassName"] = config.high_priority_class
    if workload.pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in workload.pull_secrets]
    if workload.weights is not None and workload.weights_verification is not None:
        spec["initContainers"] = [_verifier(workload, workload.weights_verification)]
    if workload.fetch is not None:
        spec["initContainers"] = [_fetcher(workload, workload.fetch)]
        # The node's disk, as large as the files (and a margin): a listing that lied about
        # them cannot fill it.
        limit = math.ceil(workload.fetch.size_bytes / 2**20) + 64
        spec["volumes"] = [{"name": WEIGHTS_VOLUME, "emptyDir": {"sizeLimit": f"{limit}Mi"}}]
    if workload.weights is not None:
        # An image volume: the kubelet has the runtime pull it by digest with the pod's pull
        # Secrets, and the node's content store keeps it for every later worker and restart.
        spec["volumes"] = [
            {
                "name": WEIGHTS_VOLUME,
                "image": {"reference": workload.weights, "pullPolicy": "IfNotPresent"},
            }
        ]
        if workload.weights_verification is not None:
            spec["volumes"].append(
                {"name": VERIFIER_SCRATCH, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
            )
    return spec


def spec_hash(pod: Manifest) -> str:
    """Short digest of the pod spec; changes exactly when the pods must be replaced."""
    return hashlib.sha256(json.dumps(pod, sort_keys=True).encode()).hexdigest()[:16]


def deployment(workload: Workload, config: OperatorConfig) -> Manifest:
    pod = pod_spec(workload, config)
    pod_labels = labels.child_labels(workload.name, workload.template_name)
    spec: Manifest = {
        "selector": {"matchLabels": labels.selector(workload.name)},
        "progressDeadlineSeconds": progress_deadline_seconds(workload.template, config),
        "revisionHistoryLimit": 3,
        # Never drop below the serving count during a rollout; one extra worker at a time.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {labels.SPEC_HASH_ANNOTATION: spec_hash(pod)},
            },
            "spec": pod,
        },
    }
    if workload.scaling.autoscaler is AutoscalerKind.NONE:
        # Only when nobody else scales: an autoscaler owns replicas otherwise, and writing it
        # here would fight the autoscaler on every reconcile.
        spec = {"replicas": workload.scaling.min_workers, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(workload),
        "spec": spec,
    }


def canary_deployment(
    main: Manifest, workers: int, prefer_nodes: list[str] | None = None
) -> Manifest:
    """The canary of `main` (a Model's desired Deployment): the same pods, `workers` of them,
    under the canary's name and track. Its pods carry the Model's label, so the Model's
    Service sends them a share of the traffic. `prefer_nodes` hold its weights already
    (`builders.warming`): the scheduler prefers them, and places it elsewhere rather than not
    at all."""
    model = main["metadata"]["name"]
    track = {labels.TRACK_LABEL: labels.CANARY_TRACK}
    template = main["spec"]["template"]
    if prefer_nodes:
        # By the node's name (warming pods are placed by it), not its hostname label; a field
        # selector takes one value, so one term a node.
        preferred = [
            {
                "weight": 100,
                "preference": {
                    "matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]
                },
            }
            for node in sorted(prefer_nodes)
        ]
        affinity = dict(template["spec"].get("affinity") or {})
        node_affinity = dict(affinity.get("nodeAffinity") or {})
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            *(node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or []),
            *preferred,
        ]
        affinity["nodeAffinity"] = node_affinity
        template = {**template, "spec": {**template["spec"], "affinity": affinity}}
    spec = {
        key: value
        for key, value in main["spec"].items()
        if key not in ("replicas", "selector", "template")
    }
    return {
        **main,
        "metadata": {
            **main["metadata"],
            "name": labels.canary_name(model),
            "labels": {**main["metadata"]["labels"], **track},
        },
        "spec": {
            "replicas": workers,
            "selector": {"matchLabels": {**labels.selector(model), **track}},
            **spec,
            "template": {
                **template,
                "metadata": {
                    **template["metadata"],
                    "labels": {**template["metadata"]["labels"], **track},
                },
            },
        },
    }


def service(workload: Workload) -> Manifest:
    port = workload.template.port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(workload),
        "spec": {
            "type": "ClusterIP",
            "selector": labels.selector(workload.name),
            "ports": [
                {
                    "name": labels.PORT_NAME,
                    "port": port,
                    "targetPort": labels.PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def endpoint(workload: Workload) -> str:
    namespace = workload.namespace or "default"
    return f"http://{workload.name}.{namespace}.svc:{workload.template.port}"


def hpa(workload: Workload, config: OperatorConfig) -> Manifest:
    scaling = workload.scaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(workload),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": workload.name,
            },
            "minReplicas": scaling.min_workers,
            "maxReplicas": scaling.max_workers,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": config.autoscaling.hpa_metric.name},
                        "target": {"type": "AverageValue", "averageValue": str(scaling.per_worker)},
                    },
                }
            ],
        },
    }


def scaled_object(workload: Workload, config: OperatorConfig) -> Manifest:
    scaling = workload.scaling
    keda = config.autoscaling.keda
    namespace = workload.namespace or "default"
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(workload),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": workload.name,
            },
            "minReplicaCount": 0,
            "maxReplicaCount": scaling.max_workers,
            "cooldownPeriod": keda.cooldown_seconds,
            "triggers": [
                {
                    "type": keda.type,
                    "metadata": {
                        "serverAddress": keda.server_address,
                        "query": keda.query.format(namespace=namespace, model=workload.name),
                        "threshold": str(scaling.per_worker),
                        "activationThreshold": keda.activation_threshold,
                    },
                }
            ],
        },
    }


#: (apiVersion, kind) of every autoscaler a Model may own; all but the wanted one are deleted.
AUTOSCALER_KINDS: dict[AutoscalerKind, tuple[str, str]] = {
    AutoscalerKind.HPA: ("autoscaling/v2", "HorizontalPodAutoscaler"),
    AutoscalerKind.KEDA: ("keda.sh/v1alpha1", "ScaledObject"),
}


@dataclass(frozen=True)
class Children:
    """The whole desired state of a Model's children, and the autoscalers that must not exist."""

    deployment: Manifest
    service: Manifest
    autoscaler: Manifest | None
    unwanted_autoscalers: list[tuple[str, str]]

    @property
    def manifests(self) -> list[Manifest]:
        return [m for m in (self.deployment, self.service, self.autoscaler) if m is not None]


def children(workload: Workload, config: OperatorConfig) -> Children:
    kind = workload.scaling.autoscaler
    autoscaler = (
        hpa(workload, config)
        if kind is AutoscalerKind.HPA
        else scaled_object(workload, config)
        if kind is AutoscalerKind.KEDA
        else None
    )
    return Children(
        deployment=deployment(workload, config),
        service=service(workload),
        autoscaler=autoscaler,
        unwanted_autoscalers=[ref for other, ref in AUTOSCALER_KINDS.items() if other is not kind],
    )
