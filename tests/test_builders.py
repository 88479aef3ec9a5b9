"""Pure builders: every template field lands on the right Kubernetes field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelyard.api.v1alpha1 import Model, ModelTemplate, Registry, RegistryStatus, parse
from modelyard.builders import drift
from modelyard.builders import workload as wl
from modelyard.builders.plan import check_template, plan_model
from modelyard.config import OperatorConfig
from modelyard.status import reasons
from support.cluster import Session
from support.examples import example

CONFIG = OperatorConfig()
RERANKER = ("ModelTemplate", "custom-reranking-model-template")


def typed(kind: str, name: str, **changes: Any) -> Any:
    document = example(kind, name)
    for path, value in changes.items():
        node = document
        *parents, last = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return parse(document)


def registries() -> dict[str, Registry]:
    """The examples' registries as the operator leaves them once checked: quay's pull Secret
    (the robot account's dockerconfigjson) published."""
    quay = typed("Registry", "quay")
    return {
        "dockerhub": typed("Registry", "dockerhub"),
        "quay": quay.model_copy(update={"status": RegistryStatus(pull_secret="quay-robot")}),
    }


def verified_version() -> Any:
    """awesome-llm 1.1.0 as the operator leaves it once its digest is verified."""
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "DigestVerified",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    status = {"conditions": [ready], "image": "quay.io/acme/awesome-llm@sha256:" + "0" * 64}
    return typed("ModelVersion", "awesome-llm-1.1.0", status=status)


def plan(model: Model, template: ModelTemplate | None, **kwargs: Any) -> Any:
    return plan_model(model, template, registries(), [], CONFIG, **kwargs)


def reranker_children() -> wl.Children:
    result = plan(typed("Model", "my-reranking-model"), typed(*RERANKER))
    assert result.children is not None, result.checks
    return result.children


def container(children: wl.Children) -> dict[str, Any]:
    containers = children.deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# Every field of the seed's reranker template, and where it must land.
SEED_FIELDS = [
    (
        "gpus 1 → nvidia.com/gpu request",
        lambda c: container(c)["resources"]["requests"]["nvidia.com/gpu"],
        "1",
    ),
    (
        "gpus 1 → nvidia.com/gpu limit",
        lambda c: container(c)["resources"]["limits"]["nvidia.com/gpu"],
        "1",
    ),
    ("cpus 1 → cpu request", lambda c: container(c)["resources"]["requests"]["cpu"], "1"),
    ("cpus 1 → cpu limit", lambda c: container(c)["resources"]["limits"]["cpu"], "1"),
    ("memory 8Gi", lambda c: container(c)["resources"]["requests"]["memory"], "8Gi"),
    (
        "storage 16Gi → ephemeral-storage",
        lambda c: container(c)["resources"]["limits"]["ephemeral-storage"],
        "16Gi",
    ),
    (
        "gpuType a10 → nodeSelector",
        lambda c: c.deployment["spec"]["template"]["spec"]["nodeSelector"],
        {"nvidia.com/gpu.product": "NVIDIA-A10"},
    ),
    (
        "GPU taint tolerated",
        lambda c: c.deployment["spec"]["template"]["spec"]["tolerations"],
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    ),
    ("readiness delay 120", lambda c: container(c)["readinessProbe"]["initialDelaySeconds"], 120),
    ("readiness path", lambda c: container(c)["readinessProbe"]["httpGet"]["path"], "/readyz"),
    (
        "env DEVICE=cuda plus parameters",
        lambda c: container(c)["env"],
        [
            {"name": "DEVICE", "value": "cuda"},
            {"name": "MODEL_BUCKET", "value": "my-bucket"},
            {
                "name": "MODEL_PATH",
                "value": "finetuned-cross-encoder_ms-marco-MiniLM-L-12-v2.tar.gz",
            },
        ],
    ),
    (
        "image by digest through the Registry's host",
        lambda c: container(c)["image"],
        "registry-1.docker.io/egp-test/sentence-transformer-reranker@sha256:"
        "c0e2184184b4aeca56ea2128e95f5c99d141e5fd260c99d52b4e8f0a38c14a13",
    ),
    (
        "minWorkers 0 → KEDA ScaledObject",
        lambda c: (c.autoscaler or {}).get("kind"),
        "ScaledObject",
    ),
    ("min 0", lambda c: (c.autoscaler or {})["spec"]["minReplicaCount"], 0),
    ("max 1", lambda c: (c.autoscaler or {})["spec"]["maxReplicaCount"], 1),
    (
        "perWorker 10 → trigger threshold",
        lambda c: (c.autoscaler or {})["spec"]["triggers"][0]["metadata"]["threshold"],
        "10",
    ),
    ("an autoscaler owns replicas", lambda c: "replicas" in c.deployment["spec"], False),
    (
        "highPriority false → no priority class",
        lambda c: "priorityClassName" in c.deployment["spec"]["template"]["spec"],
        False,
    ),
    (
        "the HPA must not exist",
        lambda c: c.unwanted_autoscalers,
        [("autoscaling/v2", "HorizontalPodAutoscaler")],
    ),
    ("Service targets the model port", lambda c: c.service["spec"]["ports"][0]["port"], 8080),
    (
        "children named after the Model",
        lambda c: {m["metadata"]["name"] for m in c.manifests},
        {"my-reranking-model"},
    ),
]


@pytest.mark.parametrize(
    ("field", "read", "expected"), SEED_FIELDS, ids=[f[0] for f in SEED_FIELDS]
)
def test_seed_reranker_field_lands_on_kubernetes_field(
    field: str, read: Any, expected: Any
) -> None:
    assert read(reranker_children()) == expected


def test_children_carry_labels_and_owner_reference() -> None:
    model = typed("Model", "my-reranking-model", metadata__uid="1234-uid")
    children = plan(model, typed(*RERANKER)).children
    assert children is not None
    for manifest in children.manifests:
        metadata = manifest["metadata"]
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "modelyard"
        assert metadata["labels"]["modelyard.dev/model"] == "my-reranking-model"
        assert metadata["labels"]["app.kubernetes.io/name"] == "my-reranking-model"
        assert metadata["ownerReferences"] == [
            {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "Model",
                "name": "my-reranking-model",
                "uid": "1234-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_children_are_accepted_by_the_api_server(session: Session) -> None:
    """A dry-run server-side apply with strict field validation: a misspelt or mistyped field
    in a builder is refused here, not in a user's cluster."""
    model = typed("Model", "awesome-chat", metadata__uid="u1")
    versions = [verified_version()]
    result = plan_model(model, typed("ModelTemplate", "chat-h100"), registries(), versions, CONFIG)
    assert result.children is not None, result.checks
    session.api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml-team"}})
    for manifest in [*reranker_children().manifests, *result.children.manifests]:
        session.api.apply(manifest, "modelyard", dry_run=True)
        assert session.api.warnings == [], (manifest["kind"], session.api.warnings)


def test_what_the_server_stores_holds_what_was_applied(session: Session) -> None:
    """The drift check compares our manifest with the object the server keeps, which drops
    zero values (`initialDelaySeconds: 0` comes back as no field) and adds defaults. If the
    comparison took either for a hand edit, every pass would re-apply the Deployment; a real
    hand edit must still be seen, by the field's path."""
    session.api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml-team"}})
    model = typed("Model", "docs-embedder", metadata__uid="u2")
    template = typed("ModelTemplate", "cpu-embedding", spec__readiness__initialDelaySeconds=0)
    result = plan_model(model, template, registries(), [], CONFIG)
    assert result.children is not None, result.checks
    for manifest in [*reranker_children().manifests, *result.children.manifests]:
        desired = drift.stamped(manifest)
        stored = session.api.apply(desired, "modelyard", dry_run=True)
        assert drift.why_apply(desired, stored) is None, manifest["kind"]
    deployment = drift.stamped(result.children.deployment)
    stored = session.api.apply(deployment, "modelyard", dry_run=True)
    stored["spec"]["template"]["spec"]["containers"][0]["image"] = "edited:by-hand"
    assert drift.why_apply(deployment, stored) == (
        f"spec.template.spec.containers[{deployment['spec']['template']['spec']['containers'][0]['name']}].image"
    )


@pytest.mark.parametrize(
    ("min_workers", "max_workers", "autoscaler", "replicas"),
    [(2, 2, None, 2), (1, 4, "HorizontalPodAutoscaler", None), (0, 3, "ScaledObject", None)],
)
def test_exactly_one_autoscaler(
    min_workers: int, max_workers: int, autoscaler: str | None, replicas: int | None
) -> None:
    template = typed(
        *RERANKER,
        spec__scaling={"minWorkers": min_workers, "maxWorkers": max_workers, "perWorker": 5},
    )
    children = plan(typed("Model", "my-reranking-model"), template).children
    assert children is not None
    assert (children.autoscaler or {}).get("kind") == autoscaler
    assert children.deployment["spec"].get("replicas") == replicas
    unwanted = {kind for _, kind in children.unwanted_autoscalers}
    assert autoscaler not in unwanted
    assert len(unwanted) == (2 if autoscaler is None else 1)


def test_hpa_targets_per_worker_concurrency() -> None:
    template = typed(*RERANKER, spec__scaling={"minWorkers": 1, "maxWorkers": 5, "perWorker": 7})
    children = plan(typed("Model", "my-reranking-model"), template).children
    assert children is not None and children.autoscaler is not None
    metric = children.autoscaler["spec"]["metrics"][0]
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "7"}
    assert metric["pods"]["metric"]["name"] == CONFIG.autoscaling.hpa_metric.name
    assert children.autoscaler["spec"]["scaleTargetRef"]["name"] == "my-reranking-model"


def test_model_scaling_override_wins_over_template() -> None:
    model = typed("Model", "my-reranking-model", spec__scaling={"minWorkers": 2, "maxWorkers": 2})
    children = plan(model, typed(*RERANKER)).children
    assert children is not None
    assert children.autoscaler is None and children.deployment["spec"]["replicas"] == 2


def test_keda_missing_is_an_error_not_a_silent_one() -> None:
    result = plan(typed("Model", "my-reranking-model"), typed(*RERANKER), keda_available=False)
    assert result.children is None
    assert result.blocking is not None and result.blocking.reason == reasons.AUTOSCALER_UNAVAILABLE
    assert "KEDA" in result.blocking.message


def test_startup_probe_is_sized_to_the_startup_timeout() -> None:
    template = typed(*RERANKER, spec__startupTimeoutSeconds=600)
    probe = container(plan(typed("Model", "my-reranking-model"), template).children)["startupProbe"]
    # 600 s from container start, the first 120 s of which are the readiness delay: the
    # kubelet's last check, whose failure restarts the container, comes at 600 s.
    last_check = probe["initialDelaySeconds"] + probe["periodSeconds"] * (
        probe["failureThreshold"] - 1
    )
    assert last_check == 600
    children = plan(typed("Model", "my-reranking-model"), template).children
    assert children is not None
    assert children.deployment["spec"]["progressDeadlineSeconds"] > 600


def test_no_startup_probe_when_timeout_is_zero() -> None:
    template = typed(*RERANKER, spec__startupTimeoutSeconds=0)
    assert "startupProbe" not in container(
        plan(typed("Model", "my-reranking-model"), template).children
    )


def test_high_priority_sets_the_configured_priority_class() -> None:
    template = typed(*RERANKER, spec__highPriority=True)
    spec = plan(typed("Model", "my-reranking-model"), template).children.deployment["spec"][
        "template"
    ]["spec"]
    assert spec["priorityClassName"] == "modelyard-high-priority"


def test_mig_slice_requests_its_own_resource_name() -> None:
    template = typed(
        *RERANKER, spec__resources={"gpus": 1, "gpuType": "nvidia-hopper-h100-mig-1g-10gb"}
    )
    resources = container(plan(typed("Model", "my-reranking-model"), template).children)[
        "resources"
    ]
    assert resources["limits"] == {"nvidia.com/mig-1g.10gb": "1"}


def test_unknown_gpu_type_is_reported_by_name() -> None:
    template = typed(*RERANKER, spec__resources={"gpus": 1, "gpuType": "nvidia-volta-v100"})
    result = plan(typed("Model", "my-reranking-model"), template)
    assert result.children is None
    assert result.blocking is not None and result.blocking.reason == reasons.UNKNOWN_GPU_TYPE
    assert "nvidia-volta-v100" in result.blocking.message
    assert check_template(template, CONFIG).reason == reasons.UNKNOWN_GPU_TYPE


def test_spec_change_changes_the_pod_template_hash() -> None:
    before = reranker_children().deployment["spec"]["template"]["metadata"]["annotations"]
    template = typed(*RERANKER, spec__env={"DEVICE": "cpu"})
    after = plan(typed("Model", "my-reranking-model"), template).children.deployment["spec"][
        "template"
    ]["metadata"]["annotations"]
    assert before["modelyard.dev/spec-hash"] != after["modelyard.dev/spec-hash"]
    assert reranker_children().deployment == reranker_children().deployment  # deterministic


def test_field_removed_from_template_disappears() -> None:
    template = typed(*RERANKER, spec__env=None)
    env = container(plan(typed("Model", "my-reranking-model"), template).children)["env"]
    assert [item["name"] for item in env] == ["MODEL_BUCKET", "MODEL_PATH"]


@pytest.mark.parametrize(
    ("template_changes", "model_changes", "reason", "fragment"),
    [
        ({}, {"spec__parameters": {"MODEL_BUCKET": "b"}}, reasons.PARAMETERS_INVALID, "MODEL_PATH"),
        ({}, {"spec__template": "nope"}, reasons.TEMPLATE_NOT_FOUND, "nope"),
        ({"spec__image__registry": "ghcr"}, {}, reasons.REGISTRY_NOT_FOUND, "ghcr"),
        ({"spec__image": None}, {}, reasons.VERSION_REQUIRED, "spec.version"),
        (
            {},
            {"spec__version": {"model": "awesome-llm", "version": "^1"}},
            reasons.VERSION_NOT_FOUND,
            "awesome-llm",
        ),
        ({}, {"spec__scaling": {"minWorkers": 3}}, reasons.INVALID_SCALING, "maxWorkers 1"),
    ],
)
def test_each_blocking_input_has_its_own_reason(
    template_changes: dict[str, Any], model_changes: dict[str, Any], reason: str, fragment: str
) -> None:
    template = typed(*RERANKER, **template_changes)
    model = typed("Model", "my-reranking-model", **model_changes)
    result = plan(model, None if model.spec.template == "nope" else template)
    assert result.children is None
    assert result.blocking is not None
    assert result.blocking.reason == reason
    assert fragment in result.blocking.message


def test_version_selection_takes_the_highest_ready_match() -> None:
    def version(name: str, ready: bool) -> Any:
        status = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "X",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "image": f"quay.io/acme/awesome-llm@sha256:{'1' * 64}",
        }
        return typed("ModelVersion", name, status=status)

    model = typed("Model", "awesome-chat")
    template = typed("ModelTemplate", "chat-h100")
    both = [version("awesome-llm-1.0.0", True), version("awesome-llm-1.1.0", True)]
    assert plan_model(model, template, registries(), both, CONFIG).resolved_version == "1.1.0"
    # 1.1.0 not verified: no silent fallback to a pre-release outside the range either.
    only_old = [version("awesome-llm-1.0.0", True), version("awesome-llm-1.1.0", False)]
    result = plan_model(model, template, registries(), only_old, CONFIG)
    assert result.blocking is not None and result.blocking.reason == reasons.VERSION_NOT_READY


def test_a_pinned_model_says_why_its_version_is_not_ready() -> None:
    """An unsigned version under Enforce is not Ready: a Model pinned to it names the cause."""
    unsigned = typed(
        "ModelVersion",
        "awesome-llm-1.1.0",
        status={
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "SignatureMissing",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        },
    )
    model = typed("Model", "awesome-chat")
    assert model.spec.version is not None
    pinned = model.model_copy(
        update={
            "spec": model.spec.model_copy(
                update={"version": model.spec.version.model_copy(update={"version": "1.1.0"})}
            )
        }
    )
    result = plan_model(
        pinned, typed("ModelTemplate", "chat-h100"), registries(), [unsigned], CONFIG
    )
    assert result.blocking is not None and result.blocking.reason == reasons.VERSION_NOT_READY
    assert "(unverified: 1.1.0 (SignatureMissing))" in result.blocking.message


def test_template_checks_catch_what_the_schema_cannot() -> None:
    document = copy.deepcopy(example(*RERANKER))
    document["spec"]["startupTimeoutSeconds"] = 60
    document["spec"]["parameters"][1]["default"] = "x"
    verdict = check_template(parse(document), CONFIG)
    assert verdict.reason == reasons.INVALID_SPEC
    assert "startupTimeoutSeconds" in verdict.message and "MODEL_PATH" in verdict.message


def test_pods_pull_with_the_registrys_pull_secret() -> None:
    quay = registries()["quay"].model_copy(
        update={
            "status": parse(
                {**example("Registry", "quay"), "status": {"pullSecret": "quay-pull"}}
            ).status
        }
    )
    versions = [verified_version()]
    result = plan_model(
        typed("Model", "awesome-chat"),
        typed("ModelTemplate", "chat-h100"),
        {**registries(), "quay": quay},
        versions,
        CONFIG,
    )
    assert result.children is not None
    pod = result.children.deployment["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "quay-pull"}]


def test_a_template_the_operator_marks_invalid_makes_no_workers() -> None:
    """startupTimeoutSeconds shorter than the readiness delay: every worker would be killed
    before its first readiness check, so the Model gets no Deployment and says why."""
    template = typed(
        *RERANKER, spec__startupTimeoutSeconds=60, spec__readiness__initialDelaySeconds=120
    )
    result = plan(typed("Model", "my-reranking-model"), template)
    assert result.children is None
    assert result.blocking is not None
    assert result.blocking.reason == reasons.TEMPLATE_NOT_READY
    assert "startupTimeoutSeconds (60) is shorter than" in result.blocking.message


def test_an_unchecked_signature_is_a_wait_and_a_missing_one_stalls() -> None:
    """Under Enforce, a template's image runs only once its signature verified. Until the
    first check (a new or just-edited template) the Model waits — Reconciling, so a Flux
    health check keeps waiting; only a definite verdict (SignatureMissing) stalls it."""
    from modelyard.api.v1alpha1 import ModelState  # noqa: PLC0415
    from modelyard.status import kstatus  # noqa: PLC0415

    enforcing = {
        **registries(),
        "dockerhub": typed(
            "Registry",
            "dockerhub",
            spec__signatures={
                "mode": "Enforce",
                "publicKeys": [{"secretName": "release-signing-key", "key": "cosign.pub"}],
            },
        ),
    }
    model = typed("Model", "my-reranking-model")
    unchecked = typed(*RERANKER)
    missing = typed(
        *RERANKER,
        metadata__generation=1,
        status={
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Signed",
                    "status": "False",
                    "reason": "SignatureMissing",
                    "message": "no cosign signature",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    )
    waits = plan_model(model, unchecked, enforcing, [], CONFIG).blocking
    assert waits is not None and waits.reason == reasons.SIGNATURE_PENDING, waits
    assert "not checked yet" in waits.message
    assert reasons.RECONCILING in kstatus.for_model(waits, ModelState.PENDING)
    stalls = plan_model(model, missing, enforcing, [], CONFIG).blocking
    assert stalls is not None and stalls.reason == reasons.TEMPLATE_NOT_READY, stalls
    assert reasons.STALLED in kstatus.for_model(stalls, ModelState.PENDING)
