"""Every failure the cluster reports reaches the Model, on the real API server: a quota that
refuses a child or the pods, a ValidatingAdmissionPolicy that refuses a Deployment, and an HPA
that cannot scale. Each: the right reason within seconds, one Warning Event, writes bounded
while the fault lasts, and recovery once it is lifted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from support.cluster import Cluster, Session
from support.controllers import DEPLOYMENTS, MODELS, apply_documents, condition, events_for
from support.examples import example
from support.operator_process import OperatorProcess, eventually
from test_operator import embedding_documents, quiet

QUOTAS = "v1/resourcequotas"
SCALED_OBJECTS = "keda.sh/v1alpha1/scaledobjects"
POLICIES = "admissionregistration.k8s.io/v1/validatingadmissionpolicies"
BINDINGS = "admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
MODEL = "docs-embedder"


def quota(hard: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "team-quota"},
        "spec": {"hard": hard},
    }


def reason_of(cluster: Cluster, kind: str = "Ready") -> str | None:
    return condition(cluster.get(MODELS, cluster.namespace, MODEL), kind).get("reason")


def message_of(cluster: Cluster, kind: str = "Ready") -> str:
    return str(condition(cluster.get(MODELS, cluster.namespace, MODEL), kind).get("message", ""))


def warnings(cluster: Cluster, reason: str, name: str = MODEL) -> list[dict[str, Any]]:
    return [
        e for e in events_for(cluster, name) if e["reason"] == reason and e["type"] == "Warning"
    ]


async def writes_while_it_lasts(cluster: Cluster, seconds: float, path_part: str) -> int:
    """Attempts to write the refused child during `seconds` (a hot loop would make hundreds)."""
    before = len([w for w in await cluster.logged_writes() if path_part in w.path])
    await asyncio.sleep(seconds)
    return len([w for w in await cluster.logged_writes() if path_part in w.path]) - before


async def test_a_quota_refusing_the_service_is_the_models_status_then_recovers(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    await apply_documents(cluster, [quota({"services": "0"})])
    await apply_documents(cluster, embedding_documents())
    await eventually(
        lambda: reason_of(cluster) == "QuotaExceeded", 10, "QuotaExceeded on Ready", operator
    )
    assert reason_of(cluster, "ChildrenApplied") == "QuotaExceeded"
    message = message_of(cluster)
    assert f"Service {MODEL}" in message and "exceeded quota" in message
    # What could be made was made: the Deployment exists and keeps existing.
    assert cluster.get(DEPLOYMENTS, cluster.namespace, MODEL) is not None
    await eventually(lambda: len(warnings(cluster, "QuotaExceeded")) == 1, 10, "one Warning")

    attempts = await writes_while_it_lasts(cluster, 10, "/services/")
    assert attempts <= 4, f"{attempts} Service writes in 10 s while the quota refuses them"
    assert len(warnings(cluster, "QuotaExceeded")) == 1

    await cluster.patch(
        QUOTAS, cluster.namespace, "team-quota", {"spec": {"hard": {"services": "5"}}}
    )
    await eventually(
        lambda: reason_of(cluster, "ChildrenApplied") == "Applied",
        30,
        "recovery after the quota is raised",
        operator,
    )
    assert reason_of(cluster) != "QuotaExceeded"


async def test_a_quota_on_pods_shows_as_pods_rejected(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    await apply_documents(cluster, [quota({"pods": "0"})])
    await apply_documents(cluster, embedding_documents())
    await eventually(
        lambda: reason_of(cluster) == "PodsRejected",
        10,
        lambda: f"PodsRejected (now {reason_of(cluster)}: {message_of(cluster)})",
        operator,
    )
    assert "exceeded quota" in message_of(cluster)
    await eventually(lambda: len(warnings(cluster, "PodsRejected")) == 1, 10, "one Warning")
    status_writes = await writes_while_it_lasts(cluster, 10, f"/models/{MODEL}/status")
    assert status_writes <= 1, f"{status_writes} status writes in 10 s while nothing changed"
    assert len(warnings(cluster, "PodsRejected")) == 1
    await cluster.patch(QUOTAS, cluster.namespace, "team-quota", {"spec": {"hard": {"pods": "9"}}})
    await eventually(
        lambda: reason_of(cluster) != "PodsRejected", 40, "recovery once pods may be created"
    )


async def test_a_validating_admission_policy_denial_is_policy_denied(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    policy = f"require-team-label-{cluster.namespace}"
    await cluster.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "has(object.metadata.labels) && "
                        "'team' in object.metadata.labels",
                        "message": "every Deployment needs a team label",
                    }
                ],
            },
        }
    )
    await cluster.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": cluster.namespace}
                    }
                },
            },
        }
    )
    try:
        # The binding takes a moment to be enforced; a plain create shows when it is.
        await _until_denied(cluster)
        await apply_documents(cluster, embedding_documents())
        await eventually(
            lambda: reason_of(cluster) == "PolicyDenied",
            10,
            lambda: f"PolicyDenied (now {reason_of(cluster)}: {message_of(cluster)})",
            operator,
        )
        assert "every Deployment needs a team label" in message_of(cluster)
        assert f"Deployment {MODEL}" in message_of(cluster)
        await eventually(lambda: len(warnings(cluster, "PolicyDenied")) == 1, 10, "one Warning")
        attempts = await writes_while_it_lasts(cluster, 10, "/deployments/")
        assert attempts <= 4, f"{attempts} Deployment writes in 10 s while the policy denies them"
        assert len(warnings(cluster, "PolicyDenied")) == 1
        assert (cluster.get(MODELS, cluster.namespace, MODEL) or {})["status"]["state"] == "FAILED"
    finally:
        await cluster.remove(BINDINGS, None, policy)
        await cluster.remove(POLICIES, None, policy)
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, cluster.namespace, MODEL) is not None,
        40,
        "the Deployment once the policy is removed",
        operator,
    )
    await eventually(lambda: reason_of(cluster, "ChildrenApplied") == "Applied", 20, "Applied")


async def _until_denied(cluster: Cluster) -> None:
    probe_deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "policy-probe", "namespace": cluster.namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }

    async def denied() -> bool:
        try:
            await cluster.apply(probe_deployment, manager="probe")
        except Exception as error:  # the admin client raises on a refusal
            return "team label" in str(error)
        await cluster.remove(DEPLOYMENTS, cluster.namespace, "policy-probe")
        return False

    await eventually(denied, 20, "the policy in force")


async def test_an_hpa_that_cannot_scale_is_shown_while_the_model_serves(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """The test server has no metrics API: the HPA controller says it cannot get its metric."""
    await apply_documents(cluster, embedding_documents())
    await eventually(
        lambda: reason_of(cluster, "Autoscaling") == "MetricsUnavailable",
        10,
        lambda: f"MetricsUnavailable (now {reason_of(cluster, 'Autoscaling')})",
        operator,
    )
    autoscaling = condition(cluster.get(MODELS, cluster.namespace, MODEL), "Autoscaling")
    assert autoscaling["status"] == "False" and "HorizontalPodAutoscaler" in autoscaling["message"]
    # The Model's own Ready is about serving, not scaling.
    assert reason_of(cluster) != "MetricsUnavailable"
    await eventually(lambda: len(warnings(cluster, "MetricsUnavailable")) == 1, 10, "one Warning")
    await quiet(cluster, operator)
    assert len(warnings(cluster, "MetricsUnavailable")) == 1


async def test_a_full_service_ip_range_is_child_rejected_not_silence(tmp_path: Path) -> None:
    """A server of its own whose Service range holds about five Services: the Models whose
    Service finds no address each say ChildRejected with the server's words; the others are
    Applied."""
    small = await asyncio.to_thread(
        Session.start, tmp_path, ["--service-cluster-ip-range=198.19.255.0/29"]
    )
    view = Cluster(small, "ip-range")
    operator = OperatorProcess(view.operator_kubeconfig(tmp_path), tmp_path).start()
    try:
        template, registry = embedding_documents()[1], embedding_documents()[0]
        models = []
        for number in range(7):
            model = example("Model", "docs-embedder")
            model["metadata"]["name"] = f"embedder-{number}"
            models.append(model)
        await apply_documents(view, [registry, template, *models])

        def reasons() -> dict[str, str | None]:
            return {
                m["metadata"]["name"]: condition(m, "ChildrenApplied").get("reason")
                for m in view.list(MODELS, view.namespace)
            }

        def settled() -> bool:
            found = list(reasons().values())
            return len(found) == 7 and set(found) == {"Applied", "ChildRejected"}

        # About 5 s after the apply: the first two 500s are retried quietly (a blip must not
        # flip a Model to FAILED), the third is reported.
        await eventually(
            settled, 10, lambda: f"Applied or ChildRejected for all (now {reasons()})", operator
        )
        services = view.list("v1/services", view.namespace)
        assert list(reasons().values()).count("Applied") == len(services)
        rejected = [
            m
            for m in view.list(MODELS, view.namespace)
            if condition(m).get("reason") == "ChildRejected"
        ]
        assert rejected and len(rejected) == 7 - len(services)
        for model in rejected:
            message = condition(model)["message"]
            assert f"Service {model['metadata']['name']}" in message
            assert "range is full" in message or "allocate" in message
            assert model["status"]["state"] == "FAILED"

            def rejections(name: str = model["metadata"]["name"]) -> list[dict[str, Any]]:
                return [
                    e
                    for e in view.list("v1/events", view.namespace)
                    if e["involvedObject"]["name"] == name and e["reason"] == "ChildRejected"
                ]

            # The Event follows the status write: the status can be read before it is posted.
            await eventually(lambda: bool(rejections()), 10, "the ChildRejected Event", operator)
            events = rejections()
            assert len(events) == 1 and events[0]["type"] == "Warning"
    finally:
        await operator.stop()
        view.close()
        small.stop()


async def test_a_scaled_object_that_is_not_ready_is_shown(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """KEDA's controller is not installed here; the test writes what it would write."""
    registry = embedding_documents()[0]
    await apply_documents(
        cluster,
        [
            registry,
            example("ModelTemplate", "custom-reranking-model-template"),
            example("Model", "my-reranking-model"),
        ],
    )
    name = "my-reranking-model"
    scaled = await eventually(
        lambda: cluster.get(SCALED_OBJECTS, cluster.namespace, name), 10, "a ScaledObject"
    )
    assert scaled is not None
    await cluster.patch(
        SCALED_OBJECTS,
        cluster.namespace,
        name,
        {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "ScaledObjectCheckFailed",
                        "message": "prometheus query failed: connection refused",
                    }
                ]
            }
        },
        subresource="status",
        merge=True,
    )

    def autoscaling() -> dict[str, Any]:
        return condition(cluster.get(MODELS, cluster.namespace, name), "Autoscaling")

    await eventually(
        lambda: autoscaling().get("reason") == "ScaledObjectNotReady",
        10,
        lambda: f"ScaledObjectNotReady (now {autoscaling()})",
        operator,
    )
    assert "prometheus query failed" in autoscaling()["message"]
    await eventually(
        lambda: len(warnings(cluster, "ScaledObjectNotReady", name)) == 1, 10, "one Warning"
    )
