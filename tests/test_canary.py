"""Canary rollouts on the real node: new versions run as real pods beside the serving ones,
are asked the template's probe on their own addresses, and are promoted or rolled back by
what those pods answer and what the kubelet and the scheduler report.

The versions are the model server with its behaviour baked into the image's environment
(another digest each): one that answers off-contract, one that crashes at start, a good one.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from support.cluster import Cluster, RealNode
from support.controllers import DEPLOYMENTS, MODELS, apply_documents, condition, events_for
from support.operator_process import OperatorProcess, eventually
from support.workloads import PROBES, registry_documents, template
from test_node import pod_summary, pods_of, reaches, states_since, stayed_ready

Obj = dict[str, Any]
NAME = "canaried"
CANARY = f"{NAME}-canary"
#: Short enough for a test, long enough that the probe asks the canary more than once.
ANALYSIS_SECONDS = 8


def version(real_node: RealNode, number: str, digest: str) -> Obj:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": f"server-{number}"},
        "spec": {
            "model": "model-server",
            "version": number,
            "registry": "local",
            "repository": real_node.repository,
            "digest": digest,
        },
    }


def canary_documents(real_node: RealNode, dip: bool = False, **template_options: Any) -> list[Obj]:
    rollout = {"strategy": "Canary", "analysisSeconds": ANALYSIS_SECONDS}
    if dip:
        rollout["allowCapacityDip"] = True
    return [
        *registry_documents(real_node),
        template(
            real_node,
            model_type="RERANKING",
            behaviour=False,
            rollout=rollout,
            **template_options,
        ),
        version(real_node, "1.0.0", real_node.digest),
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Model",
            "metadata": {"name": NAME},
            "spec": {
                "template": "served",
                "version": {"model": "model-server", "version": ">=1.0.0 <2.0.0"},
            },
        },
    ]


def rollout_of(cluster: Cluster) -> Obj:
    model = cluster.get(MODELS, cluster.namespace, NAME) or {}
    return dict((model.get("status") or {}).get("rollout") or {})


async def phase(
    cluster: Cluster, operator: OperatorProcess, wanted: str, timeout: float = 90
) -> Obj:
    found: Obj = await eventually(
        lambda: (r := rollout_of(cluster)).get("phase") == wanted and r,
        timeout,
        lambda: f"rollout {wanted} (now {rollout_of(cluster)}; pods {pod_summary(cluster, NAME)})",
        operator,
    )
    return found


def main_template(cluster: Cluster) -> Obj:
    deployment = cluster.get(DEPLOYMENTS, cluster.namespace, NAME)
    assert deployment is not None
    return dict(deployment["spec"]["template"])


def image_of(cluster: Cluster) -> str:
    return str(main_template(cluster)["spec"]["containers"][0]["image"])


async def rolled_back(cluster: Cluster, operator: OperatorProcess, cause: str) -> Obj:
    done = await phase(cluster, operator, "RolledBack", 120)
    assert done["reason"] == cause, done
    await cluster.gone(DEPLOYMENTS, cluster.namespace, CANARY)
    model = cluster.get(MODELS, cluster.namespace, NAME)
    assert condition(model, "Rollout")["reason"] == "RolledBack", condition(model, "Rollout")
    # Only a change helps: Flux and Argo CD are told at once.
    assert condition(model, "Stalled")["reason"] == cause
    return done


@pytest.mark.timeout(400)
async def test_a_canary_off_contract_or_crashing_is_rolled_back_and_a_good_one_promoted(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    ns = cluster.namespace
    await apply_documents(cluster, canary_documents(real_node))
    serving = await reaches(cluster, node_operator, NAME, ("READY", "Available"))
    assert serving["status"]["resolvedVersion"] == "1.0.0"
    since = int(serving["metadata"]["resourceVersion"])
    current = main_template(cluster)
    (first_pod,) = pods_of(cluster, NAME)

    # 1.1.0 starts and passes its readiness check, but answers off-contract.
    off = real_node.push("1.1.0", variant="off-contract", env={"ANSWER": "wrong-shape"})
    await apply_documents(cluster, [version(real_node, "1.1.0", off)])
    started = await phase(cluster, node_operator, "Canary")
    assert started["candidate"].startswith("1.1.0"), started
    assert started["current"].startswith("1.0.0"), started
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, ns, CANARY), 30, "the canary Deployment", node_operator
    )
    done = await rolled_back(cluster, node_operator, "SchemaMismatch")
    assert "chunk_scores" in done["message"], done
    # 1.0.0 never stopped: the same Deployment, the same pod, READY all along.
    assert main_template(cluster) == current
    assert [p["metadata"]["uid"] for p in pods_of(cluster, NAME)] == [first_pod["metadata"]["uid"]]
    model = cluster.get(MODELS, ns, NAME)
    assert model is not None and model["status"]["resolvedVersion"] == "1.0.0"
    reasons = [e["reason"] for e in events_for(cluster, NAME)]
    assert "Canary" in reasons and "RolledBack" in reasons, reasons

    # Not tried again while nothing changes: the next passes leave it rolled back.
    await asyncio.sleep(5)
    assert cluster.get(DEPLOYMENTS, ns, CANARY) is None
    assert rollout_of(cluster)["phase"] == "RolledBack"

    # 1.1.1 is newer, so it is tried; it crashes at start.
    crashing = real_node.push("1.1.1", variant="crashing", env={"CRASH": "true"})
    await apply_documents(cluster, [version(real_node, "1.1.1", crashing)])
    await eventually(
        lambda: rollout_of(cluster).get("candidate", "").startswith("1.1.1"),
        60,
        "a canary of 1.1.1",
        node_operator,
    )
    await rolled_back(cluster, node_operator, "CrashLoopBackOff")
    assert main_template(cluster) == current

    good = await promoted_under_load(cluster, real_node, node_operator)
    assert image_of(cluster).endswith(good)
    model = await reaches(cluster, node_operator, NAME, ("READY", "Available"))
    assert model["status"]["resolvedVersion"] == "1.2.0"
    assert condition(model, "Rollout")["reason"] == "Promoted"
    assert not condition(model, "Stalled")
    pods = pods_of(cluster, NAME)
    assert len(pods) == 1 and pods[0]["spec"]["containers"][0]["image"].endswith(good)
    stayed_ready(states_since(cluster, since, NAME))


async def promoted_under_load(
    cluster: Cluster, real_node: RealNode, operator: OperatorProcess
) -> str:
    """1.2.0 answers correctly: Analysing for analysisSeconds, then promoted. A client sending
    requests through the Model's Service meanwhile sees every one answered. Its digest."""
    good = real_node.push("1.2.0", variant="good", env={"ANSWER": "conforming"})
    service = cluster.get("v1/services", cluster.namespace, NAME)
    assert service is not None
    calls = Calls(f"http://{service['spec']['clusterIP']}:8080/predict")
    calling = asyncio.get_running_loop().run_in_executor(None, calls.run)
    try:
        await apply_documents(cluster, [version(real_node, "1.2.0", good)])
        analysing = await phase(cluster, operator, "Analysing")
        assert analysing["candidate"].startswith("1.2.0"), analysing
        promoted = await phase(cluster, operator, "Promoted", 120)
        assert promoted["candidate"].startswith("1.2.0")
        await cluster.gone(DEPLOYMENTS, cluster.namespace, CANARY)
    finally:
        calls.stop = True
        await calling
    assert calls.answered > 20, calls.answered
    assert not calls.failures, calls.failures[:5]
    return good


class Calls:
    """Requests sent one after the other to a URL until stopped; what failed, and how."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = False
        self.answered = 0
        self.failures: list[str] = []

    def run(self) -> None:
        body = json.dumps(PROBES["RERANKING"]).encode()
        while not self.stop:
            request = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    answer.read()
                self.answered += 1
            except (urllib.error.URLError, OSError) as error:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {error}")
            time.sleep(0.05)


async def test_a_canary_without_room_awaits_capacity_and_goes_when_withdrawn(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    ns = cluster.namespace
    await apply_documents(cluster, canary_documents(real_node))
    serving = await reaches(cluster, node_operator, NAME, ("READY", "Available"))
    since = int(serving["metadata"]["resourceVersion"])
    current = main_template(cluster)

    # A template change asking more CPU than the node has: the canary's pod cannot be placed.
    documents = canary_documents(real_node)
    (served,) = [d for d in documents if d["kind"] == "ModelTemplate"]
    served["spec"]["resources"]["cpus"] = "64"
    await apply_documents(cluster, [served])
    waiting = await phase(cluster, node_operator, "AwaitingCapacity")
    assert "Insufficient cpu" in waiting["message"], waiting
    model = cluster.get(MODELS, ns, NAME)
    assert condition(model, "Rollout")["reason"] == "AwaitingCapacity"
    assert condition(model, "Reconciling")["reason"] == "AwaitingCapacity"
    assert main_template(cluster) == current

    # Withdrawn: the template goes back; the canary goes, and nothing else moved.
    await apply_documents(
        cluster, [d for d in canary_documents(real_node) if d["kind"] == "ModelTemplate"]
    )
    await cluster.gone(DEPLOYMENTS, ns, CANARY)
    await eventually(lambda: not rollout_of(cluster), 30, "no rollout left", node_operator)
    assert main_template(cluster) == current
    model = cluster.get(MODELS, ns, NAME)
    assert not condition(model, "Rollout") and not condition(model, "Reconciling")
    stayed_ready(states_since(cluster, since, NAME))


def millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def free_cpu(cluster: Cluster, node: str) -> int:
    """The node's allocatable CPU (millicores) that no running pod has asked for."""
    found = cluster.get("v1/nodes", None, node)
    assert found is not None
    asked = sum(
        millicores(c.get("resources", {}).get("requests", {}).get("cpu", "0m"))
        for pod in cluster.list("v1/pods")
        if pod["spec"].get("nodeName") == node
        and pod["status"].get("phase") not in ("Succeeded", "Failed")
        for c in pod["spec"]["containers"]
    )
    return millicores(found["status"]["allocatable"]["cpu"]) - asked


@pytest.mark.timeout(400)
async def test_without_room_a_one_worker_model_lends_its_worker_to_the_canary(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """Each worker asks for 60% of the node's free CPU: the canary fits only once the
    serving worker makes room (allowCapacityDip, minWorkers 1), and the serving count comes
    back with the promotion."""
    ns = cluster.namespace
    share = f"{free_cpu(cluster, real_node.name) * 6 // 10}m"
    documents = canary_documents(real_node, dip=True)
    (served,) = [d for d in documents if d["kind"] == "ModelTemplate"]
    served["spec"]["resources"]["cpus"] = share
    await apply_documents(cluster, documents)
    await reaches(cluster, node_operator, NAME, ("READY", "Available"))

    good = real_node.push("1.2.0", variant="good", env={"ANSWER": "conforming"})
    await apply_documents(cluster, [version(real_node, "1.2.0", good)])
    waiting = await phase(cluster, node_operator, "AwaitingCapacity")
    assert "Insufficient cpu" in waiting["message"], waiting
    lent = await eventually(
        lambda: (r := rollout_of(cluster)).get("dippedFrom") == 1 and r,
        30,
        lambda: f"a serving worker lent: {rollout_of(cluster)}",
        node_operator,
    )
    assert "makes room" in lent["message"], lent
    await eventually(
        lambda: (cluster.get(DEPLOYMENTS, ns, NAME) or {}).get("spec", {}).get("replicas") == 0,
        30,
        "the serving Deployment at 0",
        node_operator,
    )
    await phase(cluster, node_operator, "Analysing", 90)
    await phase(cluster, node_operator, "Promoted", 90)
    await cluster.gone(DEPLOYMENTS, ns, CANARY)
    model = await reaches(cluster, node_operator, NAME, ("READY", "Available"), 60)
    assert model["status"]["resolvedVersion"] == "1.2.0"
    deployment = cluster.get(DEPLOYMENTS, ns, NAME)
    assert deployment is not None and deployment["spec"]["replicas"] == 1
    assert image_of(cluster).endswith(good)
