"""What a probe asks, and of whom (`Target`): a Model's Service, one of its pods, or an
external URL. Pure: a Target is a value the reconcile pass builds and the Prober compares, so
a rollout or an edited probe makes a new question rather than a stale answer."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from modelyard.api import protocols
from modelyard.api.v1alpha1 import ExternalModel, ModelTemplateSpec, Probe
from modelyard.config import Probes

Key = tuple[str, str]


#: A Model's (namespace, name), or (namespace, name, pod) for one of its canary's pods.
ProbeKey = tuple[str, ...]


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
    #: External models only: GET this path for health; without it, any answer counts but a
    #: refusal (401, 403) or a server error (5xx).
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
    #: Whose protocol the probe speaks (`modelyard.api.protocols`), and the model it names.
    protocol: str = protocols.MODELYARD
    model: str | None = None
    #: MLflow: the columns the signature of the version the workers run requires (its
    #: `status.mlflow.signature`); a sample lacking one is not sent. Empty: no signature.
    mlflow_inputs: tuple[str, ...] = ()

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
    mlflow_inputs: tuple[str, ...] = (),
) -> Target:
    address = config.service_address.format(
        name=name, namespace=namespace, port=port, clusterIP=cluster_ip
    )
    return _in_cluster(namespace, address, model_type, probe, revision, mlflow_inputs=mlflow_inputs)


def _in_cluster(
    namespace: str,
    address: str,
    model_type: str,
    probe: Probe,
    revision: str,
    *,
    mlflow_inputs: tuple[str, ...],
) -> Target:
    return Target(
        namespace=namespace,
        url=f"http://{address}",
        model_type=model_type,
        probe_path=probe.effective_path,
        probe_request=json.dumps(probe.request, sort_keys=True),
        timeout=float(probe.timeout_seconds),
        revision=revision,
        protocol=probe.protocol.value,
        model=probe.model,
        mlflow_inputs=mlflow_inputs if probe.protocol.value == protocols.MLFLOW else (),
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
    mlflow_inputs: tuple[str, ...] = (),
) -> Target:
    """One worker asked on its own address: a canary's, or the current revision's while a
    canary shares the Service (whose answer could come from either)."""
    address = config.pod_address.format(podIP=pod_ip, port=port)
    return _in_cluster(namespace, address, model_type, probe, revision, mlflow_inputs=mlflow_inputs)


def external_target(namespace: str, external: ExternalModel) -> Target:
    credentials = external.credentials
    tls = external.tls
    probe = external.probe
    return Target(
        namespace=namespace,
        url=external.url,
        model_type=external.model_type.value,
        probe_path=probe.effective_path if probe else None,
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
        protocol=probe.protocol.value if probe else protocols.MODELYARD,
        model=probe.model if probe else None,
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
