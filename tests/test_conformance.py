"""READY means "answers correctly": probes and external models, against real HTTP servers.

The operator runs as a process against the real API server (under the chart's RBAC) and the
model servers are real HTTP servers on loopback (`support.model_server`). The test plays the
kubelet for the workers; the operator reaches "the Model's Service" at the loopback server
through `probes.serviceAddress`, the setting an operator outside the cluster uses, since the
test machine has no cluster network behind Service names.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support.cluster import Cluster
from support.controllers import (
    CONSENT,
    DEPLOYMENTS,
    MODELS,
    SERVICES,
    TEMPLATES,
    apply_documents,
    condition,
    events_for,
    run_pods,
)
from support.examples import example
from support.model_server import Behaviour, ModelServer
from support.operator_process import OperatorProcess, eventually
from test_operator import offline_registry

MODEL = "my-reranking-model"
EXTERNAL = "hosted-reranker"
SECRETS = "v1/secrets"
#: Probes every 2 s while answering well, every 1 s while failing: tests see changes quickly.
PROBES = {"serviceAddress": "127.0.0.1:{port}", "intervalSeconds": 2, "retrySeconds": 1}


@pytest.fixture
async def prober(cluster: Cluster, tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    """`modelyard run` configured to reach Services on loopback."""
    process = OperatorProcess(
        cluster.operator_kubeconfig(tmp_path), tmp_path, config={"probes": PROBES}
    ).start()
    yield process
    await process.stop()


def reranker_documents(port: int, timeout: int = 5) -> list[dict[str, Any]]:
    """The examples' reranker template and Model, on one CPU worker listening on `port`."""
    template = example("ModelTemplate", "custom-reranking-model-template")
    spec = template["spec"]
    spec["port"] = port
    spec["resources"] = {"cpus": 1, "memory": "1Gi"}
    spec["scaling"] = {"minWorkers": 1, "maxWorkers": 1, "perWorker": 10}
    spec["readiness"] = {"path": "/readyz"}
    spec["probe"]["timeoutSeconds"] = timeout
    return [offline_registry(), template, example("Model", MODEL)]


async def workers_ready(
    cluster: Cluster, operator: OperatorProcess, documents: list[dict[str, Any]]
) -> None:
    """Apply the documents, and play the kubelet for the Model's workers once they exist."""
    await apply_documents(cluster, documents)
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, cluster.namespace, MODEL), 20, "Deployment", operator
    )
    # Played kubelet: the answer comes from a loopback server the test reconfigures as it
    # runs (slow, 500, off-contract); a real pod's answer is judged in test_node.
    await run_pods(cluster, cluster.namespace, MODEL)


def state(cluster: Cluster, name: str = MODEL) -> tuple[str | None, str | None, str | None]:
    """(state, Ready reason, Conformant reason)."""
    model = cluster.get(MODELS, cluster.namespace, name) or {}
    return (
        (model.get("status") or {}).get("state"),
        condition(model).get("reason"),
        condition(model, "Conformant").get("reason"),
    )


def message(cluster: Cluster, kind: str = "Ready", name: str = MODEL) -> str:
    return str(condition(cluster.get(MODELS, cluster.namespace, name), kind).get("message", ""))


async def wait_for(
    cluster: Cluster,
    operator: OperatorProcess,
    wanted: tuple[str, str, str],
    name: str = MODEL,
    timeout: float = 20,
) -> None:
    await eventually(
        lambda: state(cluster, name) == wanted,
        timeout,
        lambda: f"{name} {wanted} (now {state(cluster, name)}: {message(cluster, name=name)})",
        operator,
    )


def warnings(cluster: Cluster, reason: str, name: str = MODEL) -> list[dict[str, Any]]:
    return [
        e for e in events_for(cluster, name) if e["reason"] == reason and e["type"] == "Warning"
    ]


async def test_ready_needs_a_conforming_answer_to_the_templates_probe(
    cluster: Cluster, prober: OperatorProcess, server: ModelServer
) -> None:
    documents = reranker_documents(server.port)
    await apply_documents(cluster, documents)
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, cluster.namespace, MODEL), 20, "Deployment", prober
    )
    # Workers not ready yet: nothing is asked.
    await wait_for(cluster, prober, ("DEPLOYING", "Deploying", "AwaitingWorkers"))
    assert server.posts() == []

    # Played kubelet: the answer comes from a loopback server the test reconfigures as it
    # runs (slow, 500, off-contract); a real pod's answer is judged in test_node.
    await run_pods(cluster, cluster.namespace, MODEL)
    await wait_for(cluster, prober, ("READY", "Available", "Conformant"))
    sent = server.posts()[0]
    assert sent.path == "/predict"
    assert sent.body == documents[1]["spec"]["probe"]["request"]
    assert sent.headers.get("Content-Type", "").startswith("application/json")

    # Asked again every 2 s; the same verdict writes nothing.
    asked = len(server.posts())
    status_path = f"/models/{MODEL}/status"
    status_writes = len([w for w in await cluster.logged_writes() if status_path in w.path])
    await asyncio.sleep(5)
    assert len(server.posts()) >= asked + 2, "the probe is repeated periodically"
    assert status_writes == len(
        [w for w in await cluster.logged_writes() if status_path in w.path]
    ), "an unchanged verdict rewrote the status"

    # A rollout: the old workers serve on, so the Model stays READY on its last answer while
    # the rollout shows as Reconciling; the question is asked again at once, not at the next
    # interval, and again once the new workers are the only ones.
    asked = len(server.posts())
    await cluster.patch(
        TEMPLATES,
        cluster.namespace,
        documents[1]["metadata"]["name"],
        {"spec": {"env": {"DEVICE": "cpu"}}},
        manager="kubectl",
    )
    await eventually(
        lambda: (
            condition(cluster.get(MODELS, cluster.namespace, MODEL), "Reconciling").get("reason")
            == "Progressing"
        ),
        20,
        "the rollout under way",
        prober,
    )
    assert state(cluster) == ("READY", "Available", "Conformant")
    # Played kubelet: the answer comes from a loopback server the test reconfigures as it
    # runs (slow, 500, off-contract); a real pod's answer is judged in test_node.
    await run_pods(cluster, cluster.namespace, MODEL)
    await eventually(
        lambda: not condition(cluster.get(MODELS, cluster.namespace, MODEL), "Reconciling"),
        20,
        "the rollout finished",
        prober,
    )
    assert state(cluster) == ("READY", "Available", "Conformant")
    assert len(server.posts()) > asked


async def test_an_answer_in_the_wrong_shape_is_schema_mismatch_until_it_is_fixed(
    cluster: Cluster, prober: OperatorProcess, server: ModelServer
) -> None:
    server.behaviour = Behaviour(answer="wrong-shape")
    await workers_ready(cluster, prober, reranker_documents(server.port))
    await wait_for(cluster, prober, ("FAILED", "SchemaMismatch", "SchemaMismatch"))
    text = message(cluster)
    assert "chunk_scores: required field is missing" in text, text
    await eventually(lambda: len(warnings(cluster, "SchemaMismatch")) == 1, 10, "one Warning")

    server.behaviour = Behaviour(answer="conforming")
    await wait_for(cluster, prober, ("READY", "Available", "Conformant"))
    assert len(warnings(cluster, "SchemaMismatch")) == 1


async def test_a_model_slower_than_the_probe_timeout_is_unreachable(
    cluster: Cluster, prober: OperatorProcess, server: ModelServer
) -> None:
    server.behaviour = Behaviour(delay=3)
    await workers_ready(cluster, prober, reranker_documents(server.port, timeout=1))
    await wait_for(cluster, prober, ("FAILED", "EndpointUnreachable", "EndpointUnreachable"))
    assert "did not answer within 1 s" in message(cluster)


async def test_a_model_answering_500_is_endpoint_error(
    cluster: Cluster, prober: OperatorProcess, server: ModelServer
) -> None:
    server.behaviour = Behaviour(answer="error")
    await workers_ready(cluster, prober, reranker_documents(server.port))
    await wait_for(cluster, prober, ("FAILED", "EndpointError", "EndpointError"))
    assert "answered HTTP 500" in message(cluster)


def external_documents(url: str, token: str) -> list[dict[str, Any]]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "reranker-api-key", "labels": CONSENT},
        "type": "Opaque",
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
    model = example("Model", EXTERNAL)
    external = model["spec"]["external"]
    external["url"] = url
    external["credentials"] = {"secretName": "reranker-api-key"}
    external["probe"]["timeoutSeconds"] = 2
    return [secret, model]


async def test_an_external_model_behind_a_token(
    cluster: Cluster, prober: OperatorProcess, server: ModelServer
) -> None:
    token = "s3cr3t-reranker-token-9f8e7d"
    server.behaviour = Behaviour(token=token)
    url = f"http://localhost:{server.port}/v1"
    await apply_documents(cluster, external_documents(url, token))
    await wait_for(cluster, prober, ("READY", "Answering", "Conformant"), name=EXTERNAL)
    model = cluster.get(MODELS, cluster.namespace, EXTERNAL) or {}
    assert model["status"]["endpoint"] == url
    health, probe = server.received[0], server.posts()[0]
    assert (health.method, health.path) == ("GET", "/v1/health")
    assert probe.path == "/v1/rerank"
    assert probe.headers.get("Authorization") == f"Bearer {token}"
    # No Deployment; in-cluster clients reach it by the Model's name.
    assert cluster.get(DEPLOYMENTS, cluster.namespace, EXTERNAL) is None
    service = cluster.get(SERVICES, cluster.namespace, EXTERNAL) or {}
    assert service["spec"]["type"] == "ExternalName"
    assert service["spec"]["externalName"] == "localhost"

    # The Secret is edited to a wrong token: seen through the Secret's watch, not a restart.
    wrong = base64.b64encode(b"an-old-revoked-token").decode()
    await cluster.patch(SECRETS, cluster.namespace, "reranker-api-key", {"data": {"token": wrong}})
    await wait_for(cluster, prober, ("FAILED", "Unauthorized", "AwaitingEndpoint"), name=EXTERNAL)
    assert "401" in message(cluster, name=EXTERNAL)
    await eventually(lambda: warnings(cluster, "Unauthorized", EXTERNAL), 10, "a Warning")

    # The token is nowhere a user or a log reader could see it.
    seen = [
        str(cluster.get(MODELS, cluster.namespace, EXTERNAL)),
        str(events_for(cluster, EXTERNAL)),
        prober.output,
    ]
    for text in seen:
        assert token not in text and "an-old-revoked-token" not in text


async def test_an_external_model_whose_server_starts_late_becomes_ready(
    cluster: Cluster, prober: OperatorProcess
) -> None:
    late = ModelServer()
    url = f"http://127.0.0.1:{late.port}/v1"
    documents = external_documents(url, "t")
    documents[1]["spec"]["external"].pop("credentials")
    await apply_documents(cluster, documents[1:])
    await wait_for(
        cluster, prober, ("FAILED", "EndpointUnreachable", "AwaitingEndpoint"), name=EXTERNAL
    )
    assert f"127.0.0.1:{late.port}" in message(cluster, name=EXTERNAL)
    # An address, not a host name: no ExternalName Service (a CNAME cannot name an address).
    assert cluster.get(SERVICES, cluster.namespace, EXTERNAL) is None
    late.start()
    try:
        await wait_for(cluster, prober, ("READY", "Answering", "Conformant"), name=EXTERNAL)
        assert late.posts()[0].body == documents[1]["spec"]["external"]["probe"]["request"]
    finally:
        late.stop()


async def test_an_external_model_with_a_private_ca_is_tls_error_until_trusted(
    cluster: Cluster, prober: OperatorProcess, tmp_path: Path
) -> None:
    server = ModelServer(tls_directory=tmp_path).start()
    try:
        url = f"https://localhost:{server.port}/v1"
        documents = external_documents(url, "t")
        documents[1]["spec"]["external"].pop("credentials")
        await apply_documents(cluster, documents[1:])
        await wait_for(cluster, prober, ("FAILED", "TLSError", "AwaitingEndpoint"), name=EXTERNAL)
        assert server.posts() == []
        ca = base64.b64encode(server.ca_pem.encode()).decode()
        await apply_documents(
            cluster,
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "reranker-ca", "labels": CONSENT},
                    "data": {"ca.crt": ca},
                },
            ],
        )
        await cluster.patch(
            MODELS,
            cluster.namespace,
            EXTERNAL,
            {"spec": {"external": {"tls": {"caSecret": "reranker-ca"}}}},
            manager="kubectl",
        )
        await wait_for(cluster, prober, ("READY", "Answering", "Conformant"), name=EXTERNAL)
    finally:
        server.stop()


async def test_a_model_moved_out_of_the_cluster_loses_its_workers_and_keeps_its_name(
    cluster: Cluster, prober: OperatorProcess, server: ModelServer
) -> None:
    """A Model edited from a template to `external`: its Deployment goes, its ClusterIP Service
    becomes an ExternalName of the same name, and it is READY on the external server."""
    documents = reranker_documents(server.port)
    await apply_documents(cluster, documents)
    await eventually(
        lambda: cluster.get(SERVICES, cluster.namespace, MODEL), 20, "the Service", prober
    )
    # Played kubelet: the answer comes from a loopback server the test reconfigures as it
    # runs (slow, 500, off-contract); a real pod's answer is judged in test_node.
    await run_pods(cluster, cluster.namespace, MODEL)
    await wait_for(cluster, prober, ("READY", "Available", "Conformant"))

    moved = example("Model", MODEL)
    del moved["spec"]["template"], moved["spec"]["parameters"]
    moved["spec"]["external"] = {
        "url": f"http://localhost:{server.port}",
        "modelType": "RERANKING",
        "probe": documents[1]["spec"]["probe"],
    }
    await apply_documents(cluster, [moved])
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, cluster.namespace, MODEL) is None,
        20,
        "the Deployment deleted",
        prober,
    )
    await eventually(
        lambda: (
            (cluster.get(SERVICES, cluster.namespace, MODEL) or {}).get("spec", {}).get("type")
            == "ExternalName"
        ),
        20,
        "the Service replaced by an ExternalName",
        prober,
    )
    await wait_for(cluster, prober, ("READY", "Answering", "Conformant"))
    model = cluster.get(MODELS, cluster.namespace, MODEL) or {}
    assert model["status"]["endpoint"] == f"http://localhost:{server.port}"
    # Nothing of its life in the cluster stays in its status.
    for gone in ("image", "replicas", "readyReplicas"):
        assert gone not in model["status"], model["status"]


async def test_an_external_image_classifier_is_judged_by_its_status_and_its_classes(
    cluster: Cluster, prober: OperatorProcess, server: ModelServer
) -> None:
    """The annotation tool's "bring your own model" contract: READY only while the server
    answers `status: succeeded` with labels among the Model's registered classes."""
    model = example("Model", "image-classifier")
    external = model["spec"]["external"]
    external["url"] = f"http://127.0.0.1:{server.port}"
    external.pop("credentials")
    await apply_documents(cluster, [model])
    await wait_for(cluster, prober, ("READY", "Answering", "Conformant"), name="image-classifier")
    assert server.posts()[0].body == external["probe"]["request"]

    server.behaviour = Behaviour(answer="failed")
    await wait_for(
        cluster, prober, ("FAILED", "InferenceFailed", "InferenceFailed"), name="image-classifier"
    )
    assert "the image could not be decoded" in message(cluster, "Conformant", "image-classifier")

    server.behaviour = Behaviour(answer="unregistered-label")
    await wait_for(
        cluster, prober, ("FAILED", "SchemaMismatch", "SchemaMismatch"), name="image-classifier"
    )
    said = message(cluster, "Conformant", "image-classifier")
    assert "zebra" in said and "cat, dog, bird" in said, said

    # An image sent as base64 instead of a URL is the same contract.
    server.behaviour = Behaviour()
    external["probe"]["request"] = {"image": {"base64": base64.b64encode(b"\x89PNG").decode()}}
    await apply_documents(cluster, [model])
    await wait_for(cluster, prober, ("READY", "Answering", "Conformant"), name="image-classifier")
    assert server.posts()[-1].body == external["probe"]["request"]


async def test_an_image_classifier_offers_the_registered_classes_or_lists_its_own(
    cluster: Cluster, prober: OperatorProcess, server: ModelServer
) -> None:
    """GET /api/classes (the type's default path): every registered class must be offered;
    without registered classes, the server's are recorded and its labels judged by them."""
    model = example("Model", "image-classifier")
    external = model["spec"]["external"]
    external["url"] = f"http://127.0.0.1:{server.port}"
    external.pop("credentials")
    server.behaviour = Behaviour(classes=["cat", "dog"])
    await apply_documents(cluster, [model])
    await wait_for(
        cluster, prober, ("FAILED", "ClassesMismatch", "ClassesMismatch"), name="image-classifier"
    )
    said = message(cluster, "Conformant", "image-classifier")
    assert "bird" in said and "/api/classes" in said, said

    server.behaviour = Behaviour()  # cat, dog, bird and fish
    await wait_for(cluster, prober, ("READY", "Answering", "Conformant"), name="image-classifier")
    status = (cluster.get(MODELS, cluster.namespace, "image-classifier") or {})["status"]
    assert "classes" not in status  # registered: nothing to record

    # Not registered: the server's own classes are recorded, and judge its labels.
    external.pop("classes")
    await apply_documents(cluster, [model])
    await eventually(
        lambda: (
            (cluster.get(MODELS, cluster.namespace, "image-classifier") or {})
            .get("status", {})
            .get("classes")
            == ["cat", "dog", "bird", "fish"]
        ),
        20,
        "status.classes from the server",
        prober,
    )
    server.behaviour = Behaviour(answer="unregistered-label")
    await wait_for(
        cluster, prober, ("FAILED", "SchemaMismatch", "SchemaMismatch"), name="image-classifier"
    )
    assert "zebra" in message(cluster, "Conformant", "image-classifier")

    server.behaviour = Behaviour(classes={"not": "a list"})
    await wait_for(
        cluster, prober, ("FAILED", "ClassesMismatch", "ClassesMismatch"), name="image-classifier"
    )
    assert "not a JSON list" in message(cluster, "Conformant", "image-classifier")
