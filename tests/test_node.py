"""Models as real containers on a real node: nothing here writes a pod's status.

The session's node (kube-scheduler, a kubelet on containerd + runc, a CNI bridge, kube-proxy;
`support.node`) runs the model server image from a local registry behind basic auth. Every
reason a test asserts is what the scheduler, the kubelet or containerd reported, as a user
would see it in `kubectl get models` and `kubectl describe`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from support import kstatus
from support.cluster import Cluster, RealNode
from support.controllers import (
    DEPLOYMENTS,
    MODELS,
    PODS,
    REGISTRIES,
    apply_documents,
    condition,
    events_for,
    model_state,
)
from support.operator_process import OperatorProcess, eventually
from support.workloads import model, registry_documents, served_documents, template

Obj = dict[str, Any]
VERSIONS = "modelyard.dev/v1alpha1/modelversions"


async def reaches(
    cluster: Cluster,
    operator: OperatorProcess,
    name: str,
    wanted: tuple[str, str],
    timeout: float = 60,
) -> Obj:
    await eventually(
        lambda: model_state(cluster, name) == wanted,
        timeout,
        lambda: (
            f"Model {name} {wanted} (now {model_state(cluster, name)}, after {history(cluster)}; "
            f"pods: {pod_summary(cluster, name)})"
        ),
        operator,
    )
    found = cluster.get(MODELS, cluster.namespace, name)
    assert found is not None
    return found


def history(cluster: Cluster) -> list[tuple[str | None, str | None]]:
    """The Model's (state, reason) changes, as the API server's watch reported them."""
    seen: list[tuple[str | None, str | None]] = []
    for _, _, event in cluster.log:
        now = (
            (event["object"].get("status") or {}).get("state"),
            condition(event["object"]).get("reason"),
        )
        if not seen or seen[-1] != now:
            seen.append(now)
    return seen


def pods_of(cluster: Cluster, name: str) -> list[Obj]:
    return [
        pod
        for pod in cluster.list(PODS, cluster.namespace, f"modelyard.dev/model={name}")
        if not pod["metadata"].get("deletionTimestamp")
    ]


def pod_summary(cluster: Cluster, name: str) -> list[tuple[str, str, Any]]:
    return [
        (
            pod["metadata"]["name"],
            pod["status"].get("phase", "?"),
            [
                (c.get("state"), c.get("restartCount"), c.get("lastState"), c.get("started"))
                for c in pod["status"].get("containerStatuses", [])
            ],
        )
        for pod in pods_of(cluster, name)
    ]


def kubelet_ready(pod: Obj) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def pod_log(cluster: Cluster, pod: str) -> str:
    """`kubectl logs`: the API server fetches it from the kubelet."""
    return cluster.api.text(f"/api/v1/namespaces/{cluster.namespace}/pods/{pod}/log")


async def test_ready_only_after_the_real_readiness_probe_passes_and_the_pod_answers(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """A 4 s readiness delay, counted by the kubelet from the container's start; the image
    pulled by digest with the operator's pull Secret; the probe answered by the real pod."""
    ns = cluster.namespace
    await apply_documents(cluster, served_documents(real_node, initial_delay=4))
    await eventually(
        lambda: pods_of(cluster, "served-model"),
        30,
        lambda: f"a pod (Model: {model_state(cluster, 'served-model')})",
        node_operator,
    )
    # Running but not yet ready: the kubelet's first readiness check waits 4 s.
    deploying = await reaches(cluster, node_operator, "served-model", ("DEPLOYING", "Deploying"))
    assert condition(deploying)["status"] == "False"
    ready = await reaches(cluster, node_operator, "served-model", ("READY", "Available"))

    (pod,) = pods_of(cluster, "served-model")
    (container,) = pod["status"]["containerStatuses"]
    assert container["containerID"].startswith("containerd://")
    assert kubelet_ready(pod), pod["status"]
    assert pod["spec"]["nodeName"] == real_node.name
    started = timestamp(container["state"]["running"]["startedAt"])
    became_ready = timestamp(condition(ready, "Available")["lastTransitionTime"])
    # Timestamps have whole seconds: the 4 s delay shows as at least 3.
    assert (became_ready - started).total_seconds() >= 3, (started, became_ready)

    # What ran is the verified digest, pulled with the pull Secret the operator wrote from the
    # Registry's basic-auth Secret, and nothing else.
    registry = cluster.get(REGISTRIES, ns, "local")
    assert registry is not None
    pull_secret = registry["status"]["pullSecret"]
    assert pull_secret != "local-registry-credentials"
    assert pod["spec"]["imagePullSecrets"] == [{"name": pull_secret}]
    expected = f"{real_node.registry.host}/{real_node.repository}@{real_node.digest}"
    assert container["imageID"].endswith(real_node.digest)
    assert ready["status"]["image"] == expected
    pulled = [
        e
        for e in cluster.list("v1/events", ns)
        if e["reason"] == "Pulled" and e["involvedObject"]["name"] == pod["metadata"]["name"]
    ]
    assert pulled and expected in pulled[0]["message"]

    # READY also means the pod answered the template's probe in the EMBEDDING contract.
    assert condition(ready, "Conformant")["reason"] == "Conformant"
    assert "POST /predict" in pod_log(cluster, pod["metadata"]["name"])


async def test_a_digest_that_does_not_exist_is_image_pull_back_off(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    missing = "sha256:" + "0" * 64
    await apply_documents(cluster, served_documents(real_node, digest=missing))
    failed = await reaches(cluster, node_operator, "served-model", ("FAILED", "ImagePullBackOff"))
    message = condition(failed)["message"]
    assert missing in message and "not found" in message, message
    assert condition(failed)["status"] == "False"


async def test_a_pull_secret_with_wrong_credentials_is_image_pull_back_off(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """The Registry's Secret holds a password the registry does not take (a robot token
    rotated in the registry, not in the cluster): the Registry says Unauthorized, and the
    kubelet's pull with the operator's pull Secret is refused with containerd's own 401. The
    image is one this node has never pulled, so nothing cached can hide the refusal."""
    ns = cluster.namespace
    digest = real_node.push("wrong-credentials", variant="wrong-credentials")
    documents = [
        *registry_documents(real_node, password="rotated-elsewhere"),
        template(real_node, digest=digest, probe=False),
        model("served-model"),
    ]
    await apply_documents(cluster, documents)
    await eventually(
        lambda: condition(cluster.get(REGISTRIES, ns, "local")).get("reason") == "Unauthorized",
        30,
        "Registry Unauthorized",
        node_operator,
    )
    failed = await reaches(cluster, node_operator, "served-model", ("FAILED", "ImagePullBackOff"))
    message = condition(failed)["message"]
    assert "401 Unauthorized" in message and digest in message, message
    (pod,) = pods_of(cluster, "served-model")
    registry = cluster.get(REGISTRIES, ns, "local")
    assert registry is not None
    assert pod["spec"]["imagePullSecrets"] == [{"name": registry["status"]["pullSecret"]}]


async def test_a_server_that_exits_is_crash_loop_back_off(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    documents = served_documents(real_node, probe=False)
    documents[-1] = model("served-model", CRASH=True)
    await apply_documents(cluster, documents)
    failed = await reaches(cluster, node_operator, "served-model", ("FAILED", "CrashLoopBackOff"))
    assert "exit code 1" in condition(failed)["message"], condition(failed)["message"]
    assert condition(failed)["status"] == "False"
    (pod,) = pods_of(cluster, "served-model")
    assert (
        "CRASH=true" in pod_log(cluster, pod["metadata"]["name"])
        or pod["status"]["containerStatuses"][0]["restartCount"] >= 1
    )
    warnings = {e["reason"] for e in events_for(cluster, "served-model") if e["type"] == "Warning"}
    assert "CrashLoopBackOff" in warnings


async def test_a_server_that_never_gets_ready_is_startup_timeout(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """startupTimeoutSeconds 10: the kubelet's startup probe gives up and restarts the
    container, again and again."""
    documents = served_documents(real_node, probe=False, startup_timeout=10)
    documents[-1] = model("served-model", NEVER_READY=True)
    await apply_documents(cluster, documents)
    failed = await reaches(
        cluster, node_operator, "served-model", ("FAILED", "StartupTimeout"), timeout=90
    )
    assert "startupTimeoutSeconds" in condition(failed)["message"]
    (pod,) = pods_of(cluster, "served-model")
    (container,) = pod["status"]["containerStatuses"]
    assert container["started"] is False and container["restartCount"] >= 1


async def test_a_gpu_model_is_unschedulable_until_the_node_advertises_gpus(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """The scheduler's own words at each step: no T4 node; a T4 node whose device plugin has
    not advertised its GPUs yet; then two GPUs, and the worker runs."""
    await apply_documents(
        cluster, served_documents(real_node, probe=False, gpus=1, gpu_type="nvidia-tesla-t4")
    )
    try:
        waiting = await reaches(
            cluster, node_operator, "served-model", ("DEPLOYING", "Unschedulable")
        )
        message = condition(waiting)["message"]
        assert "0/1 nodes are available" in message, message
        assert "didn't match Pod's node affinity/selector" in message, message

        # GPU feature discovery labels the node a T4 node...
        await advertise_gpus(cluster, real_node, 0, label=True)
        await eventually(
            lambda: (
                "Insufficient nvidia.com/gpu"
                in condition(cluster.get(MODELS, cluster.namespace, "served-model"))["message"]
            ),
            60,
            "the scheduler: Insufficient nvidia.com/gpu",
            node_operator,
        )
        # ...and the device plugin advertises two GPUs.
        await advertise_gpus(cluster, real_node, 2, label=True)
        ready = await reaches(cluster, node_operator, "served-model", ("READY", "Available"))
        (pod,) = pods_of(cluster, "served-model")
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        assert kubelet_ready(pod)
        assert ready["status"]["readyReplicas"] == 1
    finally:
        await advertise_gpus(cluster, real_node, 0, label=False)


async def advertise_gpus(cluster: Cluster, real_node: RealNode, count: int, label: bool) -> None:
    """As the NVIDIA device plugin (capacity) and GPU feature discovery (the product label)
    would: extended resources in the Node's status, a label on the Node."""
    await cluster.patch(
        "v1/nodes",
        None,
        real_node.name,
        {"metadata": {"labels": {"nvidia.com/gpu.product": "Tesla-T4" if label else None}}},
        merge=True,
    )
    await cluster.patch(
        "v1/nodes",
        None,
        real_node.name,
        {"status": {"capacity": {"nvidia.com/gpu": str(count) if count else None}}},
        subresource="status",
        merge=True,
    )


async def test_an_answer_off_contract_from_a_real_pod_is_schema_mismatch_until_fixed(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    documents = served_documents(real_node, model_type="RERANKING")
    documents[-1] = model("served-model", ANSWER="wrong-shape")
    await apply_documents(cluster, documents)
    failed = await reaches(cluster, node_operator, "served-model", ("FAILED", "SchemaMismatch"))
    mismatch = condition(failed, "Conformant")
    assert mismatch["reason"] == "SchemaMismatch"
    assert "chunk_scores: required field is missing" in mismatch["message"], mismatch
    # The pods themselves are fine: the kubelet says Ready; only the answer is wrong.
    assert all(kubelet_ready(pod) for pod in pods_of(cluster, "served-model"))

    # The owner fixes the parameter: a rollout, and the new pod's answer conforms.
    await apply_documents(cluster, [model("served-model", ANSWER="conforming")])
    ready = await reaches(cluster, node_operator, "served-model", ("READY", "Available"))
    assert condition(ready, "Conformant")["reason"] == "Conformant"


def states_since(cluster: Cluster, resource_version: int, name: str = "served-model") -> list[Obj]:
    """The Model as every watch event after `resource_version` showed it."""
    return [
        event["object"]
        for version, _, event in cluster.log
        if version > resource_version and event["object"]["metadata"]["name"] == name
    ]


async def settles(cluster: Cluster, operator: OperatorProcess, timeout: float) -> Obj:
    """The Model READY with nothing under way or stuck, and so `Current` to Flux."""
    settled: Obj = await eventually(
        lambda: (
            (m := cluster.get(MODELS, cluster.namespace, "served-model"))
            and not condition(m, "Stalled")
            and not condition(m, "Reconciling")
            and m["status"]["state"] == "READY"
            and m
        ),
        timeout,
        "the rollout finished",
        operator,
    )
    assert kstatus.compute(settled)[0] == "Current"
    return settled


def stayed_ready(seen: list[Obj]) -> None:
    states = [(o.get("status") or {}).get("state") for o in seen]
    assert set(states) <= {"READY"}, f"the Model left READY while workers served: {states}"
    assert all(condition(o)["status"] == "True" for o in seen), [condition(o) for o in seen]


async def test_a_template_change_rolls_the_real_pods_and_deleting_the_model_removes_them(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """The new worker takes 3 s to get ready; the old one serves until it is, and the Model
    stays READY through the rollout, Reconciling while it runs (Flux: InProgress), Current
    after."""
    ns = cluster.namespace
    documents = served_documents(real_node)
    documents[-1] = model("served-model", READY_AFTER_SECONDS=3)
    await apply_documents(cluster, documents)
    serving = await reaches(cluster, node_operator, "served-model", ("READY", "Available"))
    assert kstatus.compute(serving)[0] == "Current"
    since = int(serving["metadata"]["resourceVersion"])
    (before,) = pods_of(cluster, "served-model")

    await apply_documents(cluster, [template(real_node, env={"BATCH_SIZE": "64"})])

    def rolled() -> Obj | None:
        pods = pods_of(cluster, "served-model")
        fresh = [p for p in pods if p["metadata"]["uid"] != before["metadata"]["uid"]]
        return fresh[0] if len(pods) == 1 and fresh and kubelet_ready(fresh[0]) else None

    after = await eventually(rolled, 60, "the new pod alone, Ready", node_operator)
    env = {e["name"]: e.get("value") for e in after["spec"]["containers"][0]["env"]}
    assert env["BATCH_SIZE"] == "64"
    assert (
        after["status"]["containerStatuses"][0]["containerID"]
        != (before["status"]["containerStatuses"][0]["containerID"])
    )
    await settles(cluster, node_operator, 30)
    seen = states_since(cluster, since)
    stayed_ready(seen)
    rolling = [o for o in seen if condition(o, "Reconciling").get("reason") == "Progressing"]
    assert rolling, "no status showed the rollout under way"
    assert kstatus.compute(rolling[0])[0] == "InProgress"

    await cluster.remove(MODELS, ns, "served-model")
    await cluster.gone(DEPLOYMENTS, ns, "served-model")
    # The kubelet stops the container and confirms: only then is the pod gone from the API.
    await eventually(
        lambda: not cluster.list(PODS, ns, "modelyard.dev/model=served-model"),
        60,
        "the pods gone",
        node_operator,
    )
    assert not any(
        after["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://") in line
        for line in real_node.node.ctr("tasks", "ls").splitlines()
    )


async def scale(cluster: Cluster, name: str, replicas: int) -> None:
    """As the HPA scales: the Deployment's scale subresource."""
    await cluster.patch(
        DEPLOYMENTS,
        cluster.namespace,
        name,
        {"spec": {"replicas": replicas}},
        subresource="scale",
        manager="horizontal-pod-autoscaler",
        merge=True,
    )


async def test_an_autoscaler_scale_up_starts_real_workers_and_the_model_stays_ready(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """The HPA's way of scaling: the Deployment's scale subresource, 1 → 3. The new workers
    take 3 s to get ready; the first keeps serving, so the Model stays READY throughout."""
    ns = cluster.namespace
    documents = served_documents(real_node, max_workers=3)
    documents[-1] = model("served-model", READY_AFTER_SECONDS=3)
    await apply_documents(cluster, documents)
    serving = await reaches(cluster, node_operator, "served-model", ("READY", "Available"))
    since = int(serving["metadata"]["resourceVersion"])

    await scale(cluster, "served-model", 3)
    await eventually(
        lambda: len([p for p in pods_of(cluster, "served-model") if kubelet_ready(p)]) == 3,
        60,
        "three Ready workers",
        node_operator,
    )
    scaled = await eventually(
        lambda: (
            (m := cluster.get(MODELS, ns, "served-model"))
            and m["status"].get("readyReplicas") == 3
            and m
        ),
        30,
        "status.readyReplicas 3",
        node_operator,
    )
    assert scaled["status"]["state"] == "READY"

    # And back down: the workers taken away stop; the one left serves throughout.
    await scale(cluster, "served-model", 1)
    await eventually(
        lambda: (
            (m := cluster.get(MODELS, ns, "served-model"))
            and m["status"].get("readyReplicas") == 1
            and m["status"].get("replicas") == 1
        ),
        60,
        "status.replicas back to 1",
        node_operator,
    )
    seen = states_since(cluster, since)
    stayed_ready(seen)
    assert any(condition(o, "Reconciling") for o in seen), "the scale was not shown under way"


async def test_a_rollout_whose_new_worker_crashes_keeps_the_old_one_serving_and_says_stalled(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """A parameter change makes the new worker exit at start. The Deployment keeps the old
    worker, which serves: READY stays, and Stalled says why the change cannot go through
    (Flux: Failed, at once, not at its timeout). Fixed, the rollout finishes."""
    ns = cluster.namespace
    await apply_documents(cluster, served_documents(real_node))
    serving = await reaches(cluster, node_operator, "served-model", ("READY", "Available"))
    since = int(serving["metadata"]["resourceVersion"])
    (old,) = pods_of(cluster, "served-model")

    await apply_documents(cluster, [model("served-model", CRASH=True)])
    stalled = await eventually(
        lambda: (
            (m := cluster.get(MODELS, ns, "served-model"))
            and condition(m, "Stalled").get("reason") == "CrashLoopBackOff"
            and m
        ),
        90,
        "Stalled: CrashLoopBackOff",
        node_operator,
    )
    assert condition(stalled)["status"] == "True", condition(stalled)
    assert stalled["status"]["state"] == "READY"
    status, message = kstatus.compute(stalled)
    assert status == "Failed" and "keeps crashing" in message, (status, message)
    assert any(
        p["metadata"]["uid"] == old["metadata"]["uid"] for p in pods_of(cluster, "served-model")
    )
    stayed_ready(states_since(cluster, since))

    await apply_documents(cluster, [model("served-model", CRASH=False, ANSWER="conforming")])
    await settles(cluster, node_operator, 90)


async def test_a_registry_outage_and_a_deleted_secret_leave_serving_models_alone(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """The Registry says what is wrong; the Model, its Deployment (same generation: no
    rollout), its pull Secret and its pod do not change."""
    ns = cluster.namespace
    await apply_documents(cluster, served_documents(real_node))
    serving = await reaches(cluster, node_operator, "served-model", ("READY", "Available"))
    since = int(serving["metadata"]["resourceVersion"])
    deployment = cluster.get(DEPLOYMENTS, ns, "served-model")
    assert deployment is not None
    (pod,) = pods_of(cluster, "served-model")
    registry = cluster.get(REGISTRIES, ns, "local")
    assert registry is not None
    pull_secret = registry["status"]["pullSecret"]

    def registry_reason() -> str | None:
        return condition(cluster.get(REGISTRIES, ns, "local")).get("reason")

    await real_node.registry.stop()
    try:
        await eventually(
            lambda: registry_reason() == "Unreachable", 40, "Unreachable", node_operator
        )
        await cluster.remove("v1/secrets", ns, "local-registry-credentials")
        await eventually(
            lambda: registry_reason() == "SecretNotFound", 40, "SecretNotFound", node_operator
        )
    finally:
        await real_node.registry.start()
    gone = cluster.get(REGISTRIES, ns, "local")
    assert gone is not None and gone["status"]["pullSecret"] == pull_secret, gone["status"]

    # The registry answers again, but its credentials are gone: nothing verifies with the
    # ones the operator had cached. A version published now waits.
    version = {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "server-1.0.0"},
        "spec": {
            "model": "model-server",
            "version": "1.0.0",
            "registry": "local",
            "repository": real_node.repository,
            "digest": real_node.digest,
        },
    }
    await apply_documents(cluster, [version])

    def version_reason() -> str | None:
        return condition(cluster.get(VERSIONS, ns, "server-1.0.0")).get("reason")

    await eventually(
        lambda: version_reason() == "RegistryNotReady", 30, "the version waits", node_operator
    )
    assert "SecretNotFound" in condition(cluster.get(VERSIONS, ns, "server-1.0.0"))["message"]

    await apply_documents(cluster, registry_documents(real_node))
    await eventually(lambda: registry_reason() == "Reachable", 40, "Reachable again", node_operator)
    await eventually(
        lambda: version_reason() == "DigestVerified", 30, "verified with the restored Secret"
    )
    after = cluster.get(DEPLOYMENTS, ns, "served-model")
    assert after is not None
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"]
    assert after["spec"]["template"] == deployment["spec"]["template"]
    assert [p["metadata"]["uid"] for p in pods_of(cluster, "served-model")] == [
        pod["metadata"]["uid"]
    ]
    stayed_ready(states_since(cluster, since))


async def test_the_operators_pull_secret_is_refused_by_nothing_else(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """Without credentials the registry refuses the same image: the pull above was made with
    the operator's Secret, not by an open registry."""
    ns = cluster.namespace
    image = f"{real_node.registry.host}/{real_node.repository}@{real_node.digest}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "no-credentials", "namespace": ns},
        "spec": {"containers": [{"name": "model", "image": image}]},
    }
    await cluster.apply(pod)

    def pull_refused() -> str | None:
        found = cluster.get(PODS, ns, "no-credentials") or {}
        for status in (found.get("status") or {}).get("containerStatuses", []):
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                return str(waiting.get("message", "")) or str(waiting.get("reason"))
        return None

    message = await eventually(pull_refused, 30, "the pull refused", node_operator)
    # containerd 1.6 said "401 Unauthorized"; containerd 2 asks for credentials it lacks
    # without sending the request.
    assert any(
        said in message for said in ("401", "no basic auth credentials", "ImagePullBackOff")
    ), message


async def test_an_image_classifier_pod_is_judged_by_its_status_and_its_classes(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess
) -> None:
    """A template of the annotation tool's contract, served by a real pod: READY while it
    answers `status: succeeded` and offers the registered classes at GET /api/classes."""
    documents = served_documents(real_node, model_type="IMAGE_CLASSIFICATION")
    (served,) = [d for d in documents if d["kind"] == "ModelTemplate"]
    served["spec"]["classes"] = ["cat", "dog"]
    await apply_documents(cluster, documents)
    ready = await reaches(cluster, node_operator, "served-model", ("READY", "Available"))
    assert condition(ready, "Conformant")["reason"] == "Conformant"

    await apply_documents(cluster, [model("served-model", ANSWER="failed")])
    failed = await reaches(cluster, node_operator, "served-model", ("FAILED", "InferenceFailed"))
    assert "the image could not be decoded" in condition(failed, "Conformant")["message"]

    # The platform team registers a class the server does not have.
    served["spec"]["classes"] = ["cat", "dog", "unicorn"]
    await apply_documents(cluster, [served, model("served-model")])
    missing = await reaches(cluster, node_operator, "served-model", ("FAILED", "ClassesMismatch"))
    assert "unicorn" in condition(missing, "Conformant")["message"]
