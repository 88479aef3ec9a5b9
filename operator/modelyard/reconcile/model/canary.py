"""Where a canary rollout stands, from the stores, the Model's last status and the prober's
memory of each canary worker; `rollout.decide` (pure) then says what to do. Nothing here
writes: the step it returns is applied by `apply` and recorded by `status`."""

from __future__ import annotations

import time
from typing import Any

from modelyard.api.v1alpha1 import (
    Model,
    ModelState,
    RolloutPhase,
    RolloutStrategy,
)
from modelyard.builders import drift, labels
from modelyard.builders import workload as wl
from modelyard.config import OperatorConfig
from modelyard.reconcile import rollout
from modelyard.reconcile.conformance import (
    Prober,
    of_template,
    pod_target,
)
from modelyard.reconcile.model.warming import scale_up_warming, unwanted, warming_for
from modelyard.reconcile.model.world import ModelWorld
from modelyard.status import conditions, reasons
from modelyard.status.model import observe

Manifest = dict[str, Any]


#: The records a scale-up's warming may replace in status.rollout: none, a finished
#: promotion's, its own. Not a rollout under way (its record is how it goes on), nor a
#: rollback's (it says which revision is not tried again): the scale-up then goes unwarmed.
SCALE_UP_OVER = frozenset({None, RolloutPhase.PROMOTED.value, RolloutPhase.WARMING.value})


def rollout_step(
    model: Model,
    workload: wl.Workload,
    *,
    desired: Manifest,
    desired_hash: str,
    world: ModelWorld,
    main_pods: list[Manifest],
    prober: Prober | None,
    config: OperatorConfig,
    previous: Manifest,
) -> rollout.Step:
    """Where a rollout stands, from the stores and the Model's last status: a canary's, and
    the warming of new weights that comes before any rollout's first new worker."""
    rules = rollout.settings(workload.template, model.spec.rollout)
    now = time.time()
    warming = warming_for(
        world.model,
        workload,
        desired=desired,
        desired_hash=desired_hash,
        world=world,
        main_pods=main_pods,
        config=config,
        now=now,
    )
    last = previous.get("rollout") or {}
    main = world.children.get("Deployment")
    scaling = None
    if warming is not None:
        warming.bounded(last, desired_hash, now)
    elif last.get("phase") in SCALE_UP_OVER:
        scaling = scale_up_warming(
            world.model,
            workload,
            desired=desired,
            desired_hash=desired_hash,
            world=world,
            main_pods=main_pods,
            config=config,
            now=now,
        )
        if scaling is not None:
            scaling.bounded(last, desired_hash, now)
            scaling.release()
    # A scale-up's pods are kept until the Deployment grew: a pass whose apply was refused
    # must not warm again.
    cold = unwanted(world, warming or scaling)
    if scaling is not None and not scaling.complete:
        return _warming_scale_up(
            workload, scaling, now=now, desired_hash=desired_hash, last=last, cold=cold
        )
    live_hash = drift.template_hash(main)
    if rules.strategy is RolloutStrategy.ROLLING and world.canary is None:
        if warming is not None and not warming.complete:
            current = _describe(previous.get("resolvedVersion"), drift.pod_image(main))
            return _warming_rolling(
                workload,
                warming,
                now=now,
                current=current,
                desired_hash=desired_hash,
                last=last,
                cold=cold,
            )
        if not last or last.get("phase") == RolloutPhase.WARMING:
            return rollout.Step(cold=cold)  # the common case, and nothing more to read for it
    startup = workload.template.startup_timeout_seconds
    key = (model.metadata.namespace or "default", model.metadata.name)
    main_serving = (
        observe(main, main_pods, live_hash or desired_hash, workload.scaling.min_workers, startup)
        if main is not None
        else None
    )
    canary_pods = [
        pod
        for pod in world.pods
        if rollout.is_canary_pod(pod)
        and ((pod.get("metadata") or {}).get("annotations") or {}).get(labels.SPEC_HASH_ANNOTATION)
        == desired_hash
    ]
    canary_observation = (
        observe(world.canary, canary_pods, desired_hash, rules.canary_workers, startup)
        if world.canary is not None
        else None
    )
    verdict = None
    if (
        prober is not None
        and workload.template.probe is not None
        and canary_observation is not None
        and canary_observation.state is ModelState.READY
    ):
        verdict = _canary_verdict(
            key,
            workload,
            pods=canary_pods,
            revision=desired_hash,
            prober=prober,
            config=config,
            mlflow_inputs=world.mlflow_inputs(model, workload.version),
        )
    elif prober is not None:
        prober.forget_canary(key)
    changing = live_hash is not None and live_hash != desired_hash
    revisions = rollout.Revisions(
        current_hash=live_hash,
        candidate_hash=desired_hash,
        current=_describe(previous.get("resolvedVersion"), drift.pod_image(main))
        if changing
        else "",
        candidate=_describe(workload.version, workload.image),
    )
    step = rollout.decide(
        rules,
        revisions,
        desired=desired,
        main=main,
        canary=world.canary,
        main_serving=main_serving,
        canary_observation=canary_observation,
        canary_verdict=verdict,
        has_probe=workload.template.probe is not None,
        previous=previous.get("rollout"),
        generation=model.metadata.generation,
        warming=warming,
        now=now,
    )
    # A rolled-back candidate's warming pods are of no use: it is not tried again as it is.
    step.cold = unwanted(world, None) if step.phase == RolloutPhase.ROLLED_BACK else cold
    return step


def _warming_rolling(
    workload: wl.Workload,
    warming: rollout.Warming,
    *,
    now: float,
    current: str,
    desired_hash: str,
    last: Manifest,
    cold: list[str],
) -> rollout.Step:
    """A rolling update held back until its weights are on the serving workers' nodes: the
    workers it starts there mount them at once."""
    base = {
        "current": current,
        "candidate": _describe(workload.version, workload.image),
        "candidateRevision": desired_hash,
        **rollout.NOT_WARMING,
    }
    announce = last.get("phase") != RolloutPhase.WARMING or last.get("candidateRevision") != (
        desired_hash
    )
    step = rollout.warming_step(
        base, warming, announce=announce, canary=None, now=now, before="the workers roll to it"
    )
    step.cold = cold
    return step


def _warming_scale_up(
    workload: wl.Workload,
    scaling: rollout.Warming,
    *,
    now: float,
    desired_hash: str,
    last: Manifest,
    cold: list[str],
) -> rollout.Step:
    """A scale-up held back until its weights are on its new workers' nodes."""
    serving = _describe(workload.version, workload.image)
    base = {
        "current": serving,
        "candidate": serving,
        "candidateRevision": desired_hash,
        "warmedOn": [],
        **rollout.NOT_WARMING,
    }
    announce = (
        last.get("phase") != RolloutPhase.WARMING
        or last.get("candidateRevision") != desired_hash
        or last.get("scaleUpTo") != scaling.scale_up_to
    )
    step = rollout.scale_up_step(base, scaling, announce=announce, now=now)
    step.cold = cold
    return step


def _canary_verdict(
    key: tuple[str, str],
    workload: wl.Workload,
    *,
    pods: list[Manifest],
    revision: str,
    prober: Prober,
    config: OperatorConfig,
    mlflow_inputs: tuple[str, ...] = (),
) -> conditions.Check | None:
    """The probe's verdict on every ready canary worker, each asked on its own address: the
    first that fails, else a pass once all answered (None until then)."""
    probe = workload.template.probe
    assert probe is not None
    asked: set[tuple[str, ...]] = set()
    found: list[conditions.Check | None] = []
    for pod in pods:
        address = (pod.get("status") or {}).get("podIP")
        name = str((pod.get("metadata") or {}).get("name"))
        if not address:
            continue
        probe_key = (*key, name)
        asked.add(probe_key)
        target = pod_target(
            key[0],
            str(address),
            port=workload.template.port,
            model_type=workload.template.model_type.value,
            probe=probe,
            revision=revision,
            config=config.probes,
            mlflow_inputs=mlflow_inputs,
        )
        verdict = prober.verdict(probe_key, of_template(target, workload.template), model=key)
        found.append(None if verdict is None else verdict.conformant or verdict.available)
    prober.forget_canary(key, keep=frozenset(asked))
    failing = [check for check in found if check is not None and not check.ok]
    if failing:
        return failing[0]
    if not found or any(check is None for check in found):
        return None
    return conditions.passed(reasons.CONFORMANT, f"{len(found)} canary workers answer correctly")


def _describe(version: str | None, image: str | None) -> str:
    """A revision in words: its version, and its image's digest (or tag) in short."""
    short = ""
    if image:
        short = image.rsplit("@", 1)[1][:19] if "@" in image else image.rsplit("/", 1)[-1]
    if version and short:
        return f"{version} ({short})"
    return version or short or "?"
