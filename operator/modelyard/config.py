"""Operator configuration: what a cluster admin decides once for every Model.

It comes from a YAML file (the Helm chart renders it from values into a ConfigMap mounted at
`MODELYARD_CONFIG`); every field has a default so `modelyard render` and a bare `make run` work
without one. GPU types live here rather than in templates because node labels, taints and MIG
resource names are facts about the cluster, not about a model.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

CONFIG_ENV = "MODELYARD_CONFIG"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
NVIDIA_GPU = "nvidia.com/gpu"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Toleration(_Config):
    """A pod toleration, in the Kubernetes shape."""

    key: str
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = "NoSchedule"

    def manifest(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


_GPU_TAINT = [Toleration(key=NVIDIA_GPU)]


class GpuType(_Config):
    """How one GPU type is requested and where pods with it may run."""

    resource_name: str = Field(NVIDIA_GPU, alias="resourceName")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[Toleration] = Field(default_factory=lambda: list(_GPU_TAINT))


def _product(product: str, resource: str = NVIDIA_GPU) -> GpuType:
    return GpuType(resource_name=resource, node_selector={GPU_PRODUCT_LABEL: product})


#: Product names as NVIDIA GPU Feature Discovery labels them; MIG slices with the "mixed"
#: strategy, where each slice size is its own extended resource.
DEFAULT_GPU_TYPES: dict[str, GpuType] = {
    "nvidia-tesla-t4": _product("Tesla-T4"),
    "nvidia-ampere-a10": _product("NVIDIA-A10"),
    "nvidia-ampere-a100": _product("NVIDIA-A100-SXM4-80GB"),
    "nvidia-hopper-h100": _product("NVIDIA-H100-80GB-HBM3"),
    "nvidia-hopper-h100-mig-1g-10gb": _product("NVIDIA-H100-80GB-HBM3", "nvidia.com/mig-1g.10gb"),
    "nvidia-hopper-h100-mig-3g-40gb": _product("NVIDIA-H100-80GB-HBM3", "nvidia.com/mig-3g.40gb"),
}


class HpaMetric(_Config):
    """The per-pod metric an HPA scales on; its target is the template's perWorker.

    The default assumes a Prometheus adapter exposing in-flight requests per pod; clusters
    that name the metric differently change it here, not in every template.
    """

    name: str = "modelyard_inflight_requests"


class KedaTrigger(_Config):
    """How a ScaledObject learns about traffic while the model is scaled to zero."""

    type: str = "prometheus"
    server_address: str = Field(
        "http://prometheus-operated.monitoring.svc:9090", alias="serverAddress"
    )
    #: `{namespace}` and `{model}` are filled in; the result is summed across pods.
    query: str = Field(
        'sum(modelyard_inflight_requests{{namespace="{namespace}",model="{model}"}})',
    )
    activation_threshold: str = Field("0", alias="activationThreshold")
    cooldown_seconds: int = Field(300, alias="cooldownSeconds", ge=0)


class Autoscaling(_Config):
    hpa_metric: HpaMetric = Field(default_factory=HpaMetric, alias="hpaMetric")
    keda: KedaTrigger = Field(default_factory=KedaTrigger)


class Probes(_Config):
    """How often the operator asks Models whether they answer, and where it finds them.

    `serviceAddress` is where a Model's Service is reached from the operator: in the cluster,
    its DNS name. An operator run outside the cluster sets it to what it can reach:
    `{clusterIP}:{port}` on a machine whose kube-proxy routes Services (a node, or the tests'
    cluster), or an address behind a port-forward; `{name}`, `{namespace}`, `{port}` and
    `{clusterIP}` (the Service's) are filled in.
    """

    interval_seconds: int = Field(60, alias="intervalSeconds", ge=1, le=86400)
    #: How soon a Model whose last answer failed is asked again.
    retry_seconds: int = Field(10, alias="retrySeconds", ge=1, le=3600)
    service_address: str = Field("{name}.{namespace}.svc:{port}", alias="serviceAddress")
    #: Where one worker is asked (a canary's, during a canary rollout): its pod's address.
    pod_address: str = Field("{podIP}:{port}", alias="podAddress")
    #: Probes in flight at once, across all Models.
    concurrency: int = Field(16, ge=1, le=1024)


#: Where no URL a user chose (an external Model's, a Registry's, and where they redirect) may
#: send the operator, whoever writes it: the cloud metadata services (instance credentials),
#: link-local addresses, and the operator's own pod (loopback). The cluster's API server is
#: refused besides, whatever this list says.
DEFAULT_DENIED_CIDRS = [
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::/32",
    "100.100.100.200/32",
    "127.0.0.0/8",
    "::1/128",
    "0.0.0.0/8",
    "::/128",
]
DEFAULT_DENIED_HOSTS = ["metadata.google.internal", "metadata", "metadata.azure.internal"]


class ExternalModels(_Config):
    """Where a URL a user chose may send the operator's requests: a Model's `external.url`, a
    Registry's URL (OCI or MLflow), and the redirects and token services those name.

    Anyone who may write a Model or a Registry may point it at a URL; the operator then sends
    GETs and POSTs there from its own network position and reports what came back. This policy
    keeps that from reaching what the user could not reach themselves. Empty allow lists allow
    any host or address not denied; every address a host resolves to is checked, at the
    moment of connecting.
    """

    allowed_schemes: list[str] = Field(
        default_factory=lambda: ["https", "http"], alias="allowedSchemes"
    )
    #: Host name patterns (`*.models.example.com`); empty: any.
    allowed_hosts: list[str] = Field(default_factory=list, alias="allowedHosts")
    #: Address ranges the host must resolve into; empty: any not denied.
    allowed_cidrs: list[str] = Field(default_factory=list, alias="allowedCIDRs")
    denied_cidrs: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DENIED_CIDRS), alias="deniedCIDRs"
    )
    denied_hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DENIED_HOSTS), alias="deniedHosts"
    )

    @field_validator("allowed_cidrs", "denied_cidrs")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad one
        return cidrs


class LeaderElection(_Config):
    """How replicas share the work (`modelyard run --leader-elect`): controller-runtime's
    defaults. A dead leader is replaced within `leaseDurationSeconds` plus one retry; a leader
    cut off from the API server stops writing after `renewDeadlineSeconds`."""

    #: Whole seconds: the Lease stores an integer, and a standby waits for what it stores.
    #: Were 10.4 stored as 10, a standby could take over while a leader with a renew deadline
    #: of 10.2 still wrote.
    lease_duration_seconds: int = Field(15, alias="leaseDurationSeconds", ge=1, le=600, strict=True)
    renew_deadline_seconds: float = Field(10, alias="renewDeadlineSeconds", gt=0, le=600)
    retry_period_seconds: float = Field(2, alias="retryPeriodSeconds", gt=0, le=60)

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElection:
        if not (
            self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds
        ):
            raise ValueError(
                "leaderElection needs retryPeriodSeconds < renewDeadlineSeconds < "
                "leaseDurationSeconds, or two replicas could both write"
            )
        return self


class OperatorConfig(_Config):
    """Everything the operator needs to know about the cluster it serves models on."""

    gpu_types: dict[str, GpuType] = Field(
        default_factory=lambda: dict(DEFAULT_GPU_TYPES), alias="gpuTypes"
    )
    high_priority_class: str = Field("modelyard-high-priority", alias="highPriorityClass")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    field_manager: str = Field("modelyard", alias="fieldManager")
    #: Port of the Prometheus /metrics endpoint; 0 turns it off.
    metrics_port: int = Field(8000, alias="metricsPort", ge=0, le=65535)
    #: Extra seconds a Deployment may make no progress after the startup budget is spent.
    progress_margin_seconds: int = Field(120, alias="progressMarginSeconds", ge=0)
    probes: Probes = Field(default_factory=Probes)
    external_models: ExternalModels = Field(default_factory=ExternalModels, alias="externalModels")
    leader_election: LeaderElection = Field(default_factory=LeaderElection, alias="leaderElection")
    #: A watch that brings nothing for this long — not even the bookmark the API server sends
    #: a quiet watch every minute — is taken for a silent connection, closed and resumed. An
    #: HTTP/2 connection silent for a third of it (at most 30 s) is sent a PING, and closed if
    #: no answer comes within another third (at most 15 s).
    watch_idle_seconds: float = Field(90, alias="watchIdleSeconds", ge=1, le=3600)
    #: The image whose `modelyard verify-weights` runs first in every worker whose weights
    #: come from a Registry with an Enforce signature policy: the operator's own image (the
    #: chart sets it). Without it such Models get no workers, and say why.
    weights_verifier_image: str | None = Field(None, alias="weightsVerifierImage")


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; the message says which and where."""


def load(path: str | Path | None = None) -> OperatorConfig:
    """Read the configuration from `path`, `$MODELYARD_CONFIG`, or use the defaults.

    A `gpuTypes` map in the file *extends* the defaults (an admin adds their own types or
    overrides one by name); set `replaceDefaultGpuTypes: true` to start from an empty map.
    """
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return OperatorConfig()
    try:
        raw: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read operator configuration {path}: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"operator configuration {path} must be a mapping")
    replace = bool(raw.pop("replaceDefaultGpuTypes", False))
    try:
        config = OperatorConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"invalid operator configuration {path}: {error}") from error
    if not replace and "gpuTypes" in raw:
        config.gpu_types = {**DEFAULT_GPU_TYPES, **config.gpu_types}
    return config
