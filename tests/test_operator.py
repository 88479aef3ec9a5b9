"""The real operator process against a real API server and controller-manager.

Each test starts `modelyard run` as a child process under the chart's RBAC and talks to it only
through the API (as users and other controllers do); the Deployment, ReplicaSet, HPA and
garbage-collector controllers are the real ones. Where workers' readiness is the subject, they
run on the real node (`real_node`; the pod failures themselves are in test_node.py). The
others run on the control plane without a node and play the kubelet for a serving baseline,
each saying why.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from support.cluster import Cluster, RealNode
from support.controllers import (
    DEPLOYMENTS,
    HPAS,
    MODELS,
    PODS,
    SCALED_OBJECTS,
    SERVICES,
    TEMPLATES,
    apply_documents,
    condition,
    events_for,
    model_state,
    run_pods,
)
from support.examples import example
from support.operator_process import OperatorProcess, eventually
from support.workloads import served_documents


def offline_registry() -> dict[str, Any]:
    """The examples' Docker Hub Registry, pointed at a closed loopback port: these tests must
    not reach the internet, and only need the Registry's host for image references."""
    registry = example("Registry", "dockerhub")
    registry["spec"]["url"] = "http://127.0.0.1:9"
    return registry


def embedding_documents() -> list[dict[str, Any]]:
    return [
        offline_registry(),
        example("ModelTemplate", "cpu-embedding"),
        example("Model", "docs-embedder"),
    ]


async def quiet(
    cluster: Cluster, operator: OperatorProcess, calm: float = 1.0, limit: float = 30
) -> None:
    """Wait until the operator has made no write for `calm` seconds (at most `limit`)."""
    deadline = asyncio.get_running_loop().time() + limit
    last = -1
    while True:
        count = len(cluster.writes())
        if count == last:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the operator never went quiet: {cluster.writes()[last:][-10:]}")
        last = count
        await asyncio.sleep(calm)
        assert operator.process is not None and operator.process.poll() is None, operator.output[
            -3000:
        ]


async def wait_state(
    cluster: Cluster,
    operator: OperatorProcess,
    name: str,
    state: str,
    reason: str,
    timeout: float = 20,
) -> dict[str, Any]:
    await eventually(
        lambda: model_state(cluster, name) == (state, reason),
        timeout,
        f"Model {name} {state}/{reason} (now {model_state(cluster, name)})",
        operator,
    )
    model = cluster.get(MODELS, cluster.namespace, name)
    assert model is not None
    return model


async def test_model_becomes_ready_only_when_its_workers_serve(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """On the real node: two workers that the kubelet reports ready after their readiness
    delay, behind an HPA; every child owned by the Model and named after it."""
    ns = cluster.namespace
    await apply_documents(
        cluster, served_documents(real_node, min_workers=2, max_workers=3, initial_delay=3)
    )
    deployment = await eventually(
        lambda: cluster.get(DEPLOYMENTS, ns, "served-model"), 20, "Deployment", node_operator
    )
    model = cluster.get(MODELS, ns, "served-model")
    assert model is not None
    for resource in (DEPLOYMENTS, SERVICES, HPAS):
        child = await eventually(
            lambda r=resource: cluster.get(r, ns, "served-model"), 10, resource, node_operator
        )
        assert child["metadata"]["ownerReferences"][0]["uid"] == model["metadata"]["uid"]
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modelyard"
    assert cluster.get(SCALED_OBJECTS, ns, "served-model") is None
    # The apiserver defaults replicas to 1, but the operator never claims the field: the HPA
    # owns it, and a GitOps tool sees no drift.
    owned = [f for f in deployment["metadata"]["managedFields"] if f["manager"] == "modelyard"]
    assert owned and all("f:replicas" not in f["fieldsV1"]["f:spec"] for f in owned)
    # Created, pods starting: DEPLOYING, and not Ready.
    await wait_state(cluster, node_operator, "served-model", "DEPLOYING", "Deploying")

    model = await wait_state(
        cluster, node_operator, "served-model", "READY", "Available", timeout=60
    )
    status = model["status"]
    assert condition(model)["status"] == "True"
    assert status["observedGeneration"] == model["metadata"]["generation"]
    assert status["readyReplicas"] == 2
    assert status["endpoint"] == f"http://served-model.{ns}.svc:8080"
    assert status["image"] == (
        f"{real_node.registry.host}/{real_node.repository}@{real_node.digest}"
    )
    running = cluster.list(PODS, ns, "modelyard.dev/model=served-model")
    assert len(running) == 2
    assert all(p["status"]["containerStatuses"][0]["ready"] for p in running)
    reasons = [e["reason"] for e in events_for(cluster, "served-model")]
    assert "Available" in reasons
    template = await eventually(
        lambda: (
            (t := cluster.get(TEMPLATES, ns, "served"))
            and (t.get("status") or {}).get("models")
            and t
        ),
        10,
        "template status",
        node_operator,
    )
    assert template["status"]["models"] == ["served-model"]
    assert condition(template)["reason"] == "Valid"
    # Each record is logged once, in the operator's format (not a second time as
    # `LEVEL:logger:...`), and says what changed.
    assert re.search(
        r"^\[[-0-9 :,]+\] INFO    modelyard.reconcile.template: ModelTemplate \S+/served: Valid",
        node_operator.output,
        re.M,
    ), node_operator.output
    assert not re.search(r"^(DEBUG|INFO|WARNING|ERROR):", node_operator.output, re.M)


async def test_invalid_parameters_and_missing_template_are_explained_then_recover(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace
    model = example("Model", "my-reranking-model")
    del model["spec"]["parameters"]["MODEL_PATH"]
    await apply_documents(cluster, [model])
    pending = await wait_state(
        cluster, operator, "my-reranking-model", "PENDING", "TemplateNotFound"
    )
    assert "custom-reranking-model-template" in condition(pending)["message"]
    # The template arrives: the Model is looked at again without any change of its own.
    await apply_documents(
        cluster,
        [
            offline_registry(),
            example("ModelTemplate", "custom-reranking-model-template"),
        ],
    )
    failed = await wait_state(
        cluster, operator, "my-reranking-model", "FAILED", "ParametersInvalid"
    )
    assert "MODEL_PATH" in condition(failed)["message"]
    assert "custom-reranking-model-template" in condition(failed)["message"]
    assert cluster.get(DEPLOYMENTS, ns, "my-reranking-model") is None
    assert any(
        e["type"] == "Warning" and e["reason"] == "ParametersInvalid"
        for e in events_for(cluster, "my-reranking-model")
    )
    await cluster.patch(
        MODELS,
        ns,
        "my-reranking-model",
        {"spec": {"parameters": {"MODEL_PATH": "m.tar.gz"}}},
        manager="kubectl",
    )
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, ns, "my-reranking-model"), 20, "Deployment", operator
    )
    fixed = cluster.get(MODELS, ns, "my-reranking-model")
    assert fixed is not None and fixed["metadata"]["generation"] == 2
    await eventually(
        lambda: (
            (cluster.get(MODELS, ns, "my-reranking-model") or {})
            .get("status", {})
            .get("observedGeneration")
            == 2
        ),
        10,
        "observedGeneration 2",
        operator,
    )
    so = await eventually(
        lambda: cluster.get(SCALED_OBJECTS, ns, "my-reranking-model"), 10, "ScaledObject", operator
    )
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (0, 1)


async def test_scale_to_zero_without_keda_is_an_error_not_a_silent_one(
    without_keda: None, cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace
    await apply_documents(
        cluster,
        [
            offline_registry(),
            example("ModelTemplate", "custom-reranking-model-template"),
            example("Model", "my-reranking-model"),
        ],
    )
    model = await wait_state(
        cluster, operator, "my-reranking-model", "FAILED", "AutoscalerUnavailable"
    )
    assert "KEDA" in condition(model)["message"]
    assert cluster.get(DEPLOYMENTS, ns, "my-reranking-model") is None, (
        "a Deployment would default to 1 replica"
    )


async def test_a_fixed_size_model_handed_to_an_autoscaler_keeps_its_workers(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """Three fixed workers; the template then asks for 2 to 4 (an HPA): the Deployment's
    replicas stay 3 throughout, never the one a Deployment without replicas defaults to."""
    ns = cluster.namespace
    documents = embedding_documents()
    documents[1]["spec"]["scaling"] = {"minWorkers": 3, "maxWorkers": 3, "perWorker": 32}
    await apply_documents(cluster, documents)
    await eventually(
        lambda: (
            (cluster.get(DEPLOYMENTS, ns, "docs-embedder") or {}).get("spec", {}).get("replicas")
            == 3
        ),
        20,
        "3 fixed replicas",
        operator,
    )
    documents[1]["spec"]["scaling"] = {"minWorkers": 2, "maxWorkers": 4, "perWorker": 32}
    await apply_documents(cluster, [documents[1]])
    seen: set[int] = set()

    def handed_over() -> bool:
        deployment = cluster.get(DEPLOYMENTS, ns, "docs-embedder") or {}
        seen.add(deployment["spec"]["replicas"])
        return cluster.get(HPAS, ns, "docs-embedder") is not None

    await eventually(handed_over, 20, "the HPA", operator)
    for _ in range(40):  # and for two seconds after
        handed_over()
        await asyncio.sleep(0.05)
    assert seen == {3}, f"the Deployment's replicas went through {sorted(seen)}"
    owners = [
        f["manager"]
        for f in (cluster.get(DEPLOYMENTS, ns, "docs-embedder") or {})["metadata"]["managedFields"]
        if "f:replicas" in f.get("fieldsV1", {}).get("f:spec", {})
    ]
    assert "modelyard" not in owners, owners


async def test_template_change_fans_out_and_drift_is_repaired(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace
    second = example("Model", "docs-embedder")
    second["metadata"]["name"] = "faq-embedder"
    await apply_documents(cluster, [*embedding_documents(), second])
    for name in ("docs-embedder", "faq-embedder"):
        await eventually(
            lambda n=name: cluster.get(DEPLOYMENTS, ns, n), 20, f"Deployment {name}", operator
        )

    def env(name: str) -> dict[str, str]:
        deployment = cluster.get(DEPLOYMENTS, ns, name) or {}
        containers = (
            deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        )
        return (
            {e["name"]: e.get("value") for e in containers[0].get("env", [])} if containers else {}
        )

    # A template edit reaches every Model made from it.
    await cluster.patch(
        TEMPLATES,
        ns,
        "cpu-embedding",
        {"spec": {"env": {"OMP_NUM_THREADS": "2"}}},
        manager="kubectl",
    )
    for name in ("docs-embedder", "faq-embedder"):
        await eventually(
            lambda n=name: env(n).get("OMP_NUM_THREADS") == "2", 10, f"{name} env", operator
        )
    # A field removed from the template disappears from the Deployments.
    await cluster.patch(TEMPLATES, ns, "cpu-embedding", {"spec": {"env": None}}, manager="kubectl")
    for name in ("docs-embedder", "faq-embedder"):
        await eventually(
            lambda n=name: "OMP_NUM_THREADS" not in env(n), 10, f"{name} env removed", operator
        )

    # A hand edit of a field the operator owns is put back.
    await cluster.patch(
        DEPLOYMENTS,
        ns,
        "docs-embedder",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "model", "image": "evil.example/backdoor:latest"}]
                    }
                }
            }
        },
        manager="kubectl-edit",
    )
    await eventually(
        lambda: (
            "sentence-embedder@sha256"
            in (cluster.get(DEPLOYMENTS, ns, "docs-embedder") or {})["spec"]["template"]["spec"][
                "containers"
            ][0]["image"]
        ),
        10,
        "image restored",
        operator,
    )
    # Fields owned by others are left alone: the HPA's replicas and an injected sidecar.
    await cluster.patch(
        DEPLOYMENTS,
        ns,
        "docs-embedder",
        {
            "spec": {
                "replicas": 3,
                "template": {
                    "spec": {"containers": [{"name": "istio-proxy", "image": "istio/proxyv2:1.22"}]}
                },
            }
        },
        manager="horizontal-pod-autoscaler",
    )
    await eventually(
        lambda: (
            len(
                cluster.get(DEPLOYMENTS, ns, "docs-embedder")["spec"]["template"]["spec"][
                    "containers"
                ]
            )
            == 2
        ),
        5,
        "sidecar present",
    )
    writes_before = len(cluster.writes())
    deployment = cluster.get(DEPLOYMENTS, ns, "docs-embedder")
    # Played kubelet: the subject is fan-out and drift repair (real pods roll in test_node).
    await run_pods(cluster, ns, "faq-embedder", count=2)
    await wait_state(cluster, operator, "faq-embedder", "READY", "Available")
    deployment = cluster.get(DEPLOYMENTS, ns, "docs-embedder")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 3
    assert {c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]} == {
        "model",
        "istio-proxy",
    }
    applies = [
        w for w in cluster.writes()[writes_before:] if "/deployments/docs-embedder" in w.path
    ]
    assert applies == [], "no fight over fields others own"


async def test_deleting_a_model_removes_its_children_and_a_used_template_is_held(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace
    await apply_documents(cluster, embedding_documents())
    await eventually(lambda: cluster.get(HPAS, ns, "docs-embedder"), 20, "HPA", operator)
    # Wait until the template's finalizer protects it.
    await eventually(
        lambda: ((cluster.get(TEMPLATES, ns, "cpu-embedding") or {}).get("metadata") or {}).get(
            "finalizers"
        ),
        10,
        "template finalizer",
        operator,
    )
    await cluster.remove(TEMPLATES, ns, "cpu-embedding")
    held = await eventually(
        lambda: (
            condition(cluster.get(TEMPLATES, ns, "cpu-embedding")).get("reason") == "InUse"
            and cluster.get(TEMPLATES, ns, "cpu-embedding")
        ),
        10,
        "template held",
        operator,
    )
    assert "docs-embedder" in condition(held)["message"]
    assert held["metadata"].get("deletionTimestamp")

    await cluster.remove(MODELS, ns, "docs-embedder")
    # The garbage collector follows the owner references.
    for resource in (DEPLOYMENTS, SERVICES, HPAS):
        await cluster.gone(resource, ns, "docs-embedder")
    await eventually(
        lambda: cluster.get(TEMPLATES, ns, "cpu-embedding") is None,
        25,
        "template deleted",
        operator,
    )


async def test_restart_in_the_middle_of_work_converges_without_duplicates(
    cluster: Cluster, tmp_path: Path
) -> None:
    ns = cluster.namespace
    names = [f"embedder-{i}" for i in range(12)]
    models = []
    for name in names:
        model = example("Model", "docs-embedder")
        model["metadata"]["name"] = name
        models.append(model)
    await apply_documents(
        cluster,
        [offline_registry(), example("ModelTemplate", "cpu-embedding"), *models],
    )
    first = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
    await eventually(lambda: len(cluster.list(DEPLOYMENTS, ns)) >= 2, 20, "some Deployments", first)
    await first.kill()
    # Someone edits a Model while the operator is down.
    await cluster.patch(
        MODELS, ns, "embedder-0", {"spec": {"parameters": {"BATCH_SIZE": 8}}}, manager="kubectl"
    )
    second = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
    try:
        await eventually(
            lambda: all(model_state(cluster, n)[0] == "DEPLOYING" for n in names),
            30,
            "all deployed",
            second,
        )
        for name in names:
            # Played kubelet: the subject is a restart in a burst of Models, not their pods.
            await run_pods(cluster, ns, name)
        await eventually(
            lambda: all(model_state(cluster, n) == ("READY", "Available") for n in names),
            30,
            "all ready",
            second,
        )
        for resource in (DEPLOYMENTS, SERVICES, HPAS):
            assert sorted(o["metadata"]["name"] for o in cluster.list(resource, ns)) == sorted(
                names
            )
        assert cluster.list(SCALED_OBJECTS, ns) == []
        env = {
            e["name"]: e.get("value")
            for e in cluster.get(DEPLOYMENTS, ns, "embedder-0")["spec"]["template"]["spec"][
                "containers"
            ][0]["env"]
        }
        assert env["BATCH_SIZE"] == "8"
        # Converged and idle: once the last in-flight writes land, nothing is written at all.
        await quiet(cluster, second)
        writes = len(await cluster.logged_writes())
        await asyncio.sleep(3)
        assert cluster.writes()[writes:] == [], "\n".join(map(str, cluster.writes()[writes:]))
        assert len(cluster.list(PODS, ns)) == 2 * len(names), "minWorkers 2 each, no more"
    finally:
        await second.stop()


async def test_metrics_are_scraped_over_http_with_bounded_labels(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace
    await apply_documents(cluster, embedding_documents())
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, ns, "docs-embedder"), 20, "Deployment", operator
    )
    # Played kubelet: the subject is the metrics endpoint; it only needs a READY Model.
    await run_pods(cluster, ns, "docs-embedder", count=2)
    await wait_state(cluster, operator, "docs-embedder", "READY", "Available")

    text = await eventually(
        lambda: (
            "modelyard_model_time_to_ready_seconds_count 1.0" in (scraped := operator.metrics())
            and scraped
        ),
        10,
        "time-to-ready observed",
        operator,
    )
    assert re.search(r'modelyard_reconciles_total\{kind="Model",result="success"\} [1-9]', text)
    assert re.search(r'modelyard_reconcile_duration_seconds_count\{kind="Model"\} [1-9]', text)
    assert 'modelyard_resources{kind="Model",ready="True",reason="Available"} 1.0' in text
    assert 'modelyard_resources{kind="ModelTemplate",ready="True",reason="Valid"} 1.0' in text
    assert 'modelyard_registry_check_failures_total{reason="Unreachable"}' in text
    # Bounded labels: no object names or namespaces.
    for unbounded in ("docs-embedder", "cpu-embedding", "ml-team", "dockerhub"):
        assert unbounded not in text
