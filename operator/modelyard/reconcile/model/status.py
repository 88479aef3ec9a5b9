"""The Model's status from what the pass observed, pure but for the prober's memory it
reads: Ready, its state and every condition, what serves during a rollout, and why the API
server refused a child. Nothing here writes; `publish` does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelyard.api.v1alpha1 import (
    Model,
    ModelState,
    Probe,
)
from modelyard.builders import drift, labels
from modelyard.builders import workload as wl
from modelyard.builders.plan import Plan
from modelyard.config import OperatorConfig
from modelyard.kube.errors import ApiError
from modelyard.reconcile import rollout
from modelyard.reconcile.conformance import (
    Prober,
    of_template,
    pod_target,
    service_target,
)
from modelyard.reconcile.model.world import ModelWorld, Outcome, key_of
from modelyard.status import conditions, kstatus, reasons
from modelyard.status.model import Observation, autoscaling

Manifest = dict[str, Any]


def assemble(
    model: Model,
    world: ModelWorld,
    *,
    plan: Plan | None,
    blocking: conditions.Check | None,
    observation: Observation,
    previous: Manifest,
    refused: conditions.Check | None,
    step: rollout.Step | None,
    deployment: Manifest | None,
    main_pods: list[Manifest],
    serving_hash: str,
    prober: Prober | None,
    config: OperatorConfig,
) -> Manifest:
    """The Model's whole status after this pass: `model_status` with the probe's verdict,
    what serves during a rollout, and the classes its server offers."""
    workload = plan.workload if plan else None
    # While a canary's pods exist (a deleted canary's keep serving through their drain), the
    # Service's answer could be theirs: the serving workers are asked on their own addresses.
    sharing = (
        world.canary is not None
        or (step is not None and step.canary is not None)
        or any(rollout.is_canary_pod(pod) for pod in world.pods)
    )
    # The signature the serving workers' sample is judged by: their version's, which during a
    # canary is the one that ran before.
    serving_version = workload.version if workload is not None else None
    if step is not None and not step.roll_main:
        serving_version = previous.get("resolvedVersion")
    status = model_status(
        model,
        plan=plan,
        blocking=blocking,
        observation=observation,
        previous=previous,
        workload=workload,
        refused=refused,
        autoscaler=world.children.get("ScaledObject")
        or world.children.get("HorizontalPodAutoscaler"),
        conformant=conformance(
            workload,
            observation,
            serving_hash,
            prober,
            config,
            service=world.children.get("Service"),
            worker=ready_pod(main_pods, serving_hash) if sharing else None,
            mlflow_inputs=world.mlflow_inputs(model, serving_version),
        ),
        rollout_status=step.status if step is not None else previous.get("rollout"),
    )
    what_serves(status, step, deployment, previous)
    classes(
        status,
        prober.offered_classes(key_of(model)) if prober is not None else None,
        workload.template.classes if workload is not None else [],
    )
    server(
        status,
        prober.server_metadata(key_of(model)) if prober is not None else None,
        workload.template.probe if workload is not None else None,
    )
    return status


def model_status(
    model: Model,
    *,
    plan: Plan | None,
    blocking: conditions.Check | None,
    observation: Observation,
    previous: Manifest,
    workload: wl.Workload | None,
    refused: conditions.Check | None = None,
    autoscaler: Manifest | None = None,
    conformant: conditions.Check | None = None,
    rollout_status: Manifest | None = None,
) -> Manifest:
    checks: dict[str, conditions.Check] = dict(plan.checks) if plan else {}
    if reasons.AUTOSCALING in checks:
        checks[reasons.AUTOSCALING] = autoscaling(checks[reasons.AUTOSCALING], autoscaler)
    if plan is not None and plan.children is not None:
        checks[reasons.CHILDREN_APPLIED] = refused or conditions.passed(
            reasons.APPLIED, "the API server stored every child"
        )
    checks[reasons.AVAILABLE] = observation.available
    if conformant is not None:
        checks[reasons.CONFORMANT] = conformant
    if blocking is None and refused is not None:
        blocking = refused
    if blocking is not None:
        ready, state = (
            blocking,
            (ModelState.PENDING if blocking.reason in reasons.WAITING else ModelState.FAILED),
        )
    else:
        ready, state = observation.available, observation.state
        if state is ModelState.READY and conformant is not None and not conformant.ok:
            # Workers are up; whether the model answers correctly decides.
            if conformant.status == conditions.UNKNOWN:
                ready, state = (
                    conditions.failed(conformant.reason, conformant.message),
                    (ModelState.DEPLOYING),
                )
            else:
                ready, state = conformant, ModelState.FAILED
    checks.update(rollout.condition(rollout_status))
    checks.update(kstatus.for_model(ready, state, observation))
    checks[reasons.READY] = ready
    generation = model.metadata.generation
    status: Manifest = {
        "state": state.value,
        "conditions": conditions.merge(previous.get("conditions"), checks, generation),
        "observedGeneration": generation,
        "replicas": observation.replicas,
        "readyReplicas": observation.ready_replicas,
    }
    if rollout_status:
        status["rollout"] = rollout_status
    if workload is not None:
        status["image"] = workload.image
        status["endpoint"] = wl.endpoint(workload)
        if workload.version:
            status["resolvedVersion"] = workload.version
    else:
        # Keep reporting what still runs while the inputs are broken.
        for kept in ("image", "endpoint", "resolvedVersion"):
            if previous.get(kept):
                status[kept] = previous[kept]
    return status


def conformance(
    workload: wl.Workload | None,
    observation: Observation,
    desired_hash: str,
    prober: Prober | None,
    config: OperatorConfig,
    *,
    service: Manifest | None,
    worker: Manifest | None = None,
    mlflow_inputs: tuple[str, ...] = (),
) -> conditions.Check | None:
    """The Conformant condition of a Model whose template declares a probe (else None):
    asked through its Service, or of one `worker` on its own address."""
    if prober is None or workload is None or workload.template.probe is None:
        return None
    key = (workload.namespace or "default", workload.name)
    probe = workload.template.probe
    if observation.state is not ModelState.READY:
        prober.forget(key)
        return conditions.unknown(
            reasons.AWAITING_WORKERS,
            f"POST {probe.effective_path} is sent once the workers are ready",
        )
    if worker is not None:
        target = pod_target(
            key[0],
            str((worker.get("status") or {}).get("podIP")),
            port=workload.template.port,
            model_type=workload.template.model_type.value,
            probe=probe,
            revision=desired_hash,
            config=config.probes,
            mlflow_inputs=mlflow_inputs,
        )
    else:
        target = service_target(
            *key,
            port=workload.template.port,
            model_type=workload.template.model_type.value,
            probe=probe,
            revision=desired_hash,
            config=config.probes,
            cluster_ip=str(((service or {}).get("spec") or {}).get("clusterIP") or ""),
            mlflow_inputs=mlflow_inputs,
        )
    verdict = prober.verdict(key, of_template(target, workload.template))
    if verdict is None or verdict.conformant is None:
        return conditions.unknown(
            reasons.PROBING,
            f"the workers are ready; waiting for the answer to POST {probe.effective_path}",
        )
    return verdict.conformant


def refusal(manifest: Manifest, error: ApiError) -> conditions.Check:
    """Why the API server would not store a child, in the server's own words."""
    text = error.message.lower()
    if error.status == 403 and "exceeded quota" in text:
        reason = reasons.QUOTA_EXCEEDED
    elif error.status in (400, 403, 422) and (
        "denied" in text
        or (error.status == 403 and "is forbidden:" in text and "cannot " not in text)
    ):
        # An admission webhook (Kyverno, Gatekeeper) or a ValidatingAdmissionPolicy. (A LimitRange
        # acts on pods, and shows as PodsRejected.)
        reason = reasons.POLICY_DENIED
    elif error.status in (400, 422):
        reason = reasons.CHILD_INVALID
    else:
        reason = reasons.CHILD_REJECTED
    name = manifest["metadata"]["name"]
    return conditions.failed(
        reason,
        f"the API server refused {manifest['kind']} {name} ({error.status}): {error.message}",
    )


def what_serves(
    status: Manifest, step: rollout.Step | None, deployment: Manifest | None, previous: Manifest
) -> None:
    """During a canary rollout, status names what the Deployment runs, not the revision
    waiting to."""
    if step is None or step.roll_main:
        return
    status["image"] = drift.pod_image(deployment) or status.get("image")
    if previous.get("resolvedVersion"):
        status["resolvedVersion"] = previous["resolvedVersion"]
    else:
        status.pop("resolvedVersion", None)


def server(status: Manifest, said: Mapping[str, Any] | None, probe: Probe | None) -> None:
    """What the model's server last said of it (a DEEPaaS or Open Inference probe), in status:
    `kubectl get model -o yaml` shows the model as its server describes it."""
    if said is None or probe is None:
        return
    model = probe.model or said.get("id") or said.get("name")
    status["server"] = {
        "protocol": probe.protocol.value,
        **({"model": str(model)} if model else {}),
        "metadata": dict(said),
    }


def classes(status: Manifest, offered: tuple[str, ...] | None, registered: list[str]) -> None:
    """The classes the server lists, in status, when the Model registered none."""
    if offered is not None and not registered:
        status["classes"] = list(offered)


def record(outcome: Outcome, status: Manifest) -> None:
    """What the runner's metrics take from a status: the state, Ready's and Autoscaling's."""
    outcome.state, outcome.reason = status["state"], status["conditions"][-1]["reason"]
    scaling = conditions.find(status["conditions"], reasons.AUTOSCALING)
    if scaling is not None:
        outcome.autoscaling = (str(scaling.get("status") == "True"), str(scaling.get("reason")))


def ready_pod(pods: list[Manifest], revision: str) -> Manifest | None:
    """A ready worker of `revision` with an address, the same one while it lasts."""
    ready = [
        pod
        for pod in pods
        if ((pod.get("metadata") or {}).get("annotations") or {}).get(labels.SPEC_HASH_ANNOTATION)
        == revision
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and (pod.get("status") or {}).get("podIP")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )
    ]
    return min(ready, key=lambda pod: str(pod["metadata"].get("name")), default=None)
