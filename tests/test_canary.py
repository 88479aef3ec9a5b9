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

from support.api import ApiRefusal, resource_path
from support.cluster import VERSIONS, Cluster, RealNode
from support.controllers import (
    DEPLOYMENTS,
    MODELS,
    PODS,
    apply_documents,
    condition,
    events_for,
)
from support.operator_process import OperatorProcess, eventually
from support.workloads import PROBES, registry_documents, template
from test_node import kubelet_ready, pod_summary, pods_of, reaches, states_since, stayed_ready

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

    # The serving pod goes (an eviction, a node drain, an OOM kill): for a moment nothing
    # serves, and its replacement runs 1.0.0 again. The rolled-back 1.1.1 never reaches the
    # serving Deployment, and the record of its rollback stays.
    (serving_pod,) = pods_of(cluster, NAME)
    await cluster.remove(PODS, ns, serving_pod["metadata"]["name"])

    def replaced() -> bool:
        pods = pods_of(cluster, NAME)
        return (
            len(pods) == 1
            and pods[0]["metadata"]["uid"] != serving_pod["metadata"]["uid"]
            and kubelet_ready(pods[0])
        )

    # The replacement serving, as the kubelet says: a READY read before the operator saw the
    # pod go would be the old one's.
    await eventually(replaced, 90, "a replacement pod, ready", node_operator)
    back = await reaches(cluster, node_operator, NAME, ("READY", "Available"), 90)
    assert main_template(cluster) == current
    assert rollout_of(cluster)["phase"] == "RolledBack", rollout_of(cluster)
    assert rollout_of(cluster)["candidate"].startswith("1.1.1"), rollout_of(cluster)
    assert back["status"]["resolvedVersion"] == "1.0.0"
    assert cluster.get(DEPLOYMENTS, ns, CANARY) is None
    since = int(back["metadata"]["resourceVersion"])

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
    # From a Model that serves through its Service (kube-proxy has its worker), so that what
    # is counted is the promotion, not a restart before it.
    await eventually(
        lambda: asyncio.to_thread(calls.answers), 60, "the Service answering", operator
    )
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

    def answers(self) -> bool:
        """Whether one request is answered now (uncounted)."""
        request = urllib.request.Request(
            self.url,
            data=json.dumps(PROBES["RERANKING"]).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                answer.read()
        except (urllib.error.URLError, OSError):
            return False
        return True

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
        # An earlier test's pods on their way out leave their room soon.
        and not pod["metadata"].get("deletionTimestamp")
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


def refuse_dip_records(cluster: Cluster) -> list[tuple[str, str]]:
    """A ValidatingAdmissionPolicy (as a policy engine would) refusing every status write of
    the test's Models that records a capacity dip; what to delete afterwards."""
    name = f"no-dip-records-{cluster.namespace}"[:63]
    cluster.api.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["modelyard.dev"],
                            "apiVersions": ["*"],
                            "operations": ["UPDATE"],
                            "resources": ["models/status"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.status.rollout) || "
                        "!has(object.status.rollout.dippedFrom)",
                        "message": "no capacity dips recorded here",
                    }
                ],
            },
        },
        "modelyard-tests",
    )
    cluster.api.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": cluster.namespace}
                    }
                },
            },
        },
        "modelyard-tests",
    )
    return [
        ("admissionregistration.k8s.io/v1/validatingadmissionpolicybindings", name),
        ("admissionregistration.k8s.io/v1/validatingadmissionpolicies", name),
    ]


def unschedulable(pod: Obj) -> bool:
    return any(
        c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
        for c in pod["status"].get("conditions", [])
    )


@pytest.mark.timeout(400)
async def test_a_capacity_dip_is_recorded_before_a_worker_is_taken(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """Two serving workers, each asking 45% of the node's free CPU; the canary fits only once
    one makes room. While the status write that records the dip is refused (a policy here; an
    outage, a lost Lease or a SIGTERM between two writes alike), no worker is taken. Once it
    goes through, one is, and both serve again when the rollout ends."""
    ns = cluster.namespace
    share = f"{free_cpu(cluster, real_node.name) * 45 // 100}m"
    documents = canary_documents(real_node, dip=True, max_workers=2)
    (served,) = [d for d in documents if d["kind"] == "ModelTemplate"]
    served["spec"]["resources"]["cpus"] = share
    await apply_documents(cluster, documents)
    await reaches(cluster, node_operator, NAME, ("READY", "Available"))
    # Two workers, as its autoscaler would have it under load (the HPA's own metric is not
    # served here, so it keeps what it is given).
    await cluster.patch(
        DEPLOYMENTS, ns, NAME, {"spec": {"replicas": 2}}, subresource="scale", merge=True
    )
    await eventually(
        lambda: (
            len([p for p in pods_of(cluster, NAME) if "canary" not in p["metadata"]["name"]]) == 2
            and reaches_ready(cluster)
        ),
        60,
        "two serving workers",
        node_operator,
    )
    policy = await asyncio.to_thread(refuse_dip_records, cluster)
    try:
        await eventually(lambda: refused_in_dry_run(cluster), 30, "the policy in force")
        good = real_node.push("1.2.0", variant="good", env={"ANSWER": "conforming"})
        await apply_documents(cluster, [version(real_node, "1.2.0", good)])
        await eventually(
            lambda: any(unschedulable(p) for p in canary_pods(cluster)),
            60,
            "the canary waiting for room",
            node_operator,
        )
        await eventually(
            lambda: "no capacity dips recorded here" in node_operator.output,
            30,
            "the dip's record refused",
            node_operator,
        )
        for _ in range(16):  # 8 s of passes that may not record the dip
            deployment = cluster.get(DEPLOYMENTS, ns, NAME)
            assert deployment is not None and deployment["spec"]["replicas"] == 2, (
                "a worker taken while its record was refused"
            )
            await asyncio.sleep(0.5)
    finally:
        for resource, name in policy:
            await cluster.remove(resource, None, name)
    await eventually(lambda: not refused_in_dry_run(cluster), 30, "the policy gone")
    # Nothing the operator watches changes when a policy goes: the next change of the Model
    # (here an annotation) brings the next pass.
    await cluster.patch(
        MODELS, ns, NAME, {"metadata": {"annotations": {"poke": "1"}}}, manager="kubectl"
    )
    lent = await eventually(
        lambda: (r := rollout_of(cluster)).get("dippedFrom") == 2 and r,
        60,
        lambda: f"the dip recorded: {rollout_of(cluster)}",
        node_operator,
    )
    assert "makes room" in lent["message"], lent
    await eventually(
        lambda: (cluster.get(DEPLOYMENTS, ns, NAME) or {}).get("spec", {}).get("replicas") == 1,
        30,
        "one worker lent",
        node_operator,
    )
    # The version is withdrawn (a promotion would need a third slot to roll two workers on
    # this full node): the canary goes, and the worker taken for it comes back.
    await cluster.remove(VERSIONS, ns, "server-1.2.0")
    await eventually(lambda: not rollout_of(cluster), 60, "the rollout withdrawn", node_operator)
    await eventually(
        lambda: (
            (cluster.get(DEPLOYMENTS, ns, NAME) or {}).get("spec", {}).get("replicas") == 2
            and reaches_ready(cluster)
        ),
        90,
        "both serving workers back",
        node_operator,
    )


def canary_pods(cluster: Cluster) -> list[Obj]:
    return [p for p in pods_of(cluster, NAME) if p["metadata"]["name"].startswith(CANARY)]


def reaches_ready(cluster: Cluster) -> bool:
    deployment = cluster.get(DEPLOYMENTS, cluster.namespace, NAME) or {}
    return int((deployment.get("status") or {}).get("readyReplicas") or 0) == 2


def refused_in_dry_run(cluster: Cluster) -> bool:
    """Whether the API server already enforces the policy (it loads policies in the
    background): a dry run of the status write it refuses."""
    path = resource_path(MODELS, cluster.namespace, NAME, "status")
    patch = {"status": {"rollout": {"phase": "AwaitingCapacity", "dippedFrom": 2}}}
    try:
        cluster.api.request(
            "PATCH",
            path,
            patch,
            query={"dryRun": "All", "fieldManager": "test"},
            content_type="application/merge-patch+json",
        )
    except ApiRefusal as refusal:
        return "no capacity dips recorded here" in refusal.message
    return False
