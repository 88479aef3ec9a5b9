"""From a Model and what it refers to, the whole desired state — or why there is none.

`plan_model` is pure: the reconciler hands it what the operator's indices hold, `modelyard
render` hands it what it read from files, and both get the same children and the same reasons
from the same inputs — but for what only a cluster can judge, which render leaves unchecked
(`allow_tag`: a tag not yet pinned, a template image's signatures; `permitted_secrets`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard.api.types import ConditionStatus
from modelyard.api.v1alpha1 import (
    Model,
    ModelTemplate,
    ModelVersion,
    Registry,
    SignatureMode,
)
from modelyard.builders import parameters as params
from modelyard.builders import workload as wl
from modelyard.builders.images import Resolved, pull_secrets, registry_reason, resolve_image
from modelyard.config import GpuType, OperatorConfig
from modelyard.registry import credentials as creds
from modelyard.status import reasons
from modelyard.status.conditions import Check, failed, passed


@dataclass(frozen=True)
class Plan:
    """Verdicts on every input, and the children when all inputs are good."""

    checks: dict[str, Check]
    workload: wl.Workload | None = None
    children: wl.Children | None = None
    resolved_version: str | None = None
    secrets: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> Check | None:
        """The first input that stops the Model from running."""
        return next((check for check in self.checks.values() if not check.ok), None)


def effective_scaling(model: Model, template: ModelTemplate) -> tuple[Check, wl.Scaling | None]:
    base = template.spec.scaling
    override = model.spec.scaling
    scaling = wl.Scaling(
        min_workers=base.min_workers
        if not override or override.min_workers is None
        else override.min_workers,
        max_workers=base.max_workers
        if not override or override.max_workers is None
        else override.max_workers,
        per_worker=base.per_worker
        if not override or override.per_worker is None
        else override.per_worker,
    )
    if scaling.min_workers > scaling.max_workers:
        return (
            failed(
                reasons.INVALID_SCALING,
                f"minWorkers {scaling.min_workers} exceeds maxWorkers {scaling.max_workers} "
                f"once the Model's overrides meet template {model.spec.template}'s scaling",
            ),
            None,
        )
    return passed(_AUTOSCALER_REASON[scaling.autoscaler]), scaling


_AUTOSCALER_REASON = {
    wl.AutoscalerKind.NONE: reasons.FIXED_SIZE,
    wl.AutoscalerKind.HPA: reasons.HPA,
    wl.AutoscalerKind.KEDA: reasons.KEDA,
}


def gpu_type(template: ModelTemplate, config: OperatorConfig) -> tuple[Check, GpuType | None]:
    resources = template.spec.resources
    if resources.gpus == 0:
        return passed(reasons.RESOLVED), None
    if resources.gpu_type is None:
        return passed(reasons.RESOLVED), GpuType()
    gpu = config.gpu_types.get(resources.gpu_type)
    if gpu is None:
        known = ", ".join(sorted(config.gpu_types)) or "none"
        return (
            failed(
                reasons.UNKNOWN_GPU_TYPE,
                f"GPU type {resources.gpu_type!r} of template {template.metadata.name} is not in "
                f"the operator's GPU-type map (known: {known})",
            ),
            None,
        )
    return passed(reasons.RESOLVED), gpu


def plan_model(
    model: Model,
    template: ModelTemplate | None,
    registries: Mapping[str, Registry],
    versions: Iterable[ModelVersion],
    config: OperatorConfig,
    *,
    keda_available: bool = True,
    allow_tag: bool = False,
    permitted_secrets: Collection[str] | None = None,
) -> Plan:
    """`permitted_secrets`: the Secrets of the namespace that consent to modelyard's use
    (`credentials.CONSENT_LABEL`); None where nothing reaches a cluster (`modelyard render`)."""
    checks: dict[str, Check] = {}
    name = model.metadata.name
    if template is None:
        checks[reasons.TEMPLATE_RESOLVED] = failed(
            reasons.TEMPLATE_NOT_FOUND,
            f"ModelTemplate {model.spec.template} does not exist in this namespace",
        )
        return Plan(checks)
    gpu_check, gpu = gpu_type(template, config)
    usable = check_template(template, config) if gpu_check.ok else gpu_check
    checks[reasons.TEMPLATE_RESOLVED] = (
        gpu_check
        if not gpu_check.ok
        # A template the operator marks InvalidSpec makes no workers: they would all fail.
        else failed(
            reasons.TEMPLATE_NOT_READY,
            f"ModelTemplate {template.metadata.name} is invalid: {usable.message}",
        )
        if not usable.ok
        else passed(reasons.RESOLVED, f"ModelTemplate {template.metadata.name}")
    )

    resolved = resolve_image(model, template, registries, versions, checks, allow_tag=allow_tag)
    image, registry, resolved_version = resolved.image, resolved.registry, resolved.version

    resolved_parameters = params.resolve(
        template.metadata.name, template.spec.parameters, model.spec.parameters
    )
    checks[reasons.PARAMETERS_VALID] = (
        failed(reasons.PARAMETERS_INVALID, "; ".join(resolved_parameters.problems))
        if resolved_parameters.problems
        else passed(reasons.VALID, f"{len(resolved_parameters.env)} parameters set")
    )
    refused = [
        secret
        for secret in dict.fromkeys(resolved_parameters.secret_names)
        if permitted_secrets is not None and secret not in permitted_secrets
    ]
    if refused and not resolved_parameters.problems:
        # The pod would get the value (a secretKeyRef), and the Model's writer controls what
        # the pod does with it: a Secret they cannot read must not get there through us.
        checks[reasons.PARAMETERS_VALID] = failed(
            reasons.SECRET_NOT_PERMITTED,
            "; ".join(creds.refusal(secret, "a secret parameter") for secret in refused),
        )

    scaling_check, scaling = effective_scaling(model, template)
    if scaling is not None and scaling.autoscaler is wl.AutoscalerKind.KEDA and not keda_available:
        scaling_check = failed(
            reasons.AUTOSCALER_UNAVAILABLE,
            "minWorkers is 0, which needs KEDA (ScaledObject keda.sh/v1alpha1) to scale from "
            "zero, and KEDA is not installed in this cluster; install KEDA or set minWorkers to 1",
        )
    checks[reasons.AUTOSCALING] = scaling_check

    pulling = pull_secrets(registry) if registry is not None else []
    if resolved.weights_registry is not None and pulling is not None:
        # The weights may live in another Registry than the runtime: the pod pulls from both.
        weights_pulling = pull_secrets(resolved.weights_registry)
        if weights_pulling is None:
            checks[reasons.VERSION_RESOLVED] = failed(
                reasons.REGISTRY_NOT_READY,
                f"Registry {resolved.weights_registry.metadata.name} has not published the "
                "pull Secret for its credentials yet "
                f"({registry_reason(resolved.weights_registry)})",
            )
            pulling = None
        else:
            pulling = list(dict.fromkeys([*pulling, *weights_pulling]))
    if pulling is None and registry is not None and reasons.VERSION_RESOLVED not in checks:
        checks[reasons.VERSION_RESOLVED] = failed(
            reasons.REGISTRY_NOT_READY,
            f"Registry {registry.metadata.name} has not published the pull Secret for its "
            f"credentials yet ({registry_reason(registry)})",
        )
    verification = _weights_verification(resolved.weights_registry, config, checks)
    fetch = _pinned_fetch(resolved, config, checks)
    plan = Plan(checks, resolved_version=resolved_version, secrets=resolved_parameters.secret_names)
    if (
        plan.blocking is not None
        or image is None
        or scaling is None
        or registry is None
        or pulling is None
    ):
        return plan
    workload = wl.Workload(
        name=name,
        namespace=model.metadata.namespace,
        template_name=template.metadata.name,
        template=template.spec,
        image=image,
        env=_with(wl.environment(template.spec, resolved_parameters.env), resolved.env),
        scaling=scaling,
        gpu=gpu,
        pull_secrets=pulling,
        owner_uid=model.metadata.uid,
        version=resolved_version,
        weights=resolved.weights,
        weights_verification=verification,
        fetch=fetch,
    )
    return Plan(
        checks,
        workload=workload,
        children=wl.children(workload, config),
        resolved_version=resolved_version,
        secrets=resolved_parameters.secret_names,
    )


def _weights_verification(
    registry: Registry | None, config: OperatorConfig, checks: dict[str, Check]
) -> wl.WeightsVerification | None:
    """How workers verify their mounted weights, when the weights' Registry enforces a
    signature policy: the operator's image checks them against the policy's public keys
    before the runtime starts. Why it cannot, in `checks`."""
    policy = registry.spec.signatures if registry is not None else None
    if registry is None or policy is None or policy.mode is not SignatureMode.ENFORCE:
        return None
    earlier = checks.get(reasons.VERSION_RESOLVED)
    if earlier is not None and not earlier.ok:
        return None  # that reason comes first
    status = registry.status
    # The keys as last published, whatever the Registry's generation: an edit of the Registry
    # (its check interval) must not block Models whose workers serve until its next pass. A
    # key changed in the policy changes the workers once that pass publishes it.
    keys = status.public_keys if status is not None else []
    current = status is not None and status.observed_generation == registry.metadata.generation
    loaded = current and any(
        c.type == reasons.SIGNATURES and c.status == ConditionStatus.TRUE
        for c in (status.conditions if status else [])
    )
    if config.weights_verifier_image is None:
        checks[reasons.VERSION_RESOLVED] = failed(
            reasons.WEIGHTS_VERIFIER_MISSING,
            f"Registry {registry.metadata.name} enforces signatures, so workers verify their "
            "weights before serving them, but the operator has no weightsVerifierImage "
            "configured (the chart sets it to the operator's own image)",
        )
        return None
    if not keys and loaded:
        checks[reasons.VERSION_RESOLVED] = failed(
            reasons.WEIGHTS_KEYS_UNSUPPORTED,
            f"Registry {registry.metadata.name}'s signature policy has no ECDSA key: workers "
            "verify weights with model-signing, which verifies ECDSA (P-256, P-384, P-521) "
            "keys only; add one to the policy",
        )
        return None
    if not keys:
        checks[reasons.VERSION_RESOLVED] = failed(
            reasons.REGISTRY_NOT_READY,
            f"Registry {registry.metadata.name} has not published its signature policy's "
            f"public keys yet ({registry_reason(registry)})",
        )
        return None
    return wl.WeightsVerification(config.weights_verifier_image, tuple(keys))


def _pinned_fetch(
    resolved: Resolved, config: OperatorConfig, checks: dict[str, Check]
) -> wl.PinnedFetch | None:
    """How workers fetch a version's pinned files from MLflow and check them, when their
    template loads files from its weights path; why they cannot, in `checks`."""
    files = resolved.mlflow_files
    if files is None:
        return None
    if config.weights_verifier_image is None:
        checks[reasons.VERSION_RESOLVED] = failed(
            reasons.WEIGHTS_VERIFIER_MISSING,
            "workers fetch this MLflow version's pinned files and check them before serving "
            "them, but the operator has no weightsVerifierImage configured (the chart sets it "
            "to the operator's own image)",
        )
        return None
    return wl.PinnedFetch(
        config.weights_verifier_image,
        files.artifacts,
        dict(files.sha256),
        files.size_bytes,
        resolved.mlflow_access,
    )


def _with(env: list[dict[str, Any]], pinned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`env` with the `pinned` variables last, replacing any of the same name: a template or a
    parameter cannot point a Model at another MLflow model than its version's."""
    names = {item["name"] for item in pinned}
    return [item for item in env if item["name"] not in names] + pinned


def check_template(template: ModelTemplate, config: OperatorConfig) -> Check:
    """Whether Models can be made from `template` at all: what the schema alone cannot judge."""
    gpu_check, _ = gpu_type(template, config)
    if not gpu_check.ok:
        return gpu_check
    problems = []
    spec = template.spec
    if 0 < spec.startup_timeout_seconds < spec.readiness.initial_delay_seconds:
        problems.append(
            f"startupTimeoutSeconds ({spec.startup_timeout_seconds}) is shorter than "
            f"readiness.initialDelaySeconds ({spec.readiness.initial_delay_seconds}): every "
            "worker would be killed before its first readiness check"
        )
    for parameter in spec.parameters:
        if parameter.required and parameter.default is not None:
            problems.append(
                f"parameter {parameter.name} is required and has a default; drop one of them"
            )
        if parameter.default is not None:
            check = params.resolve(template.metadata.name, [parameter], {})
            problems.extend(f"default of {p}" for p in check.problems)
        if parameter.name in spec.env:
            problems.append(
                f"parameter {parameter.name} would override env {parameter.name}; rename one"
            )
    if problems:
        return failed(reasons.INVALID_SPEC, "; ".join(problems))
    return passed(reasons.VALID, "Models can be made from this template")
