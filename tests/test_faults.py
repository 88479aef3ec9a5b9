"""The operator under a misbehaving API: errors, throttling, slowness, lost watches, SIGKILL.

The API server is real; the faults come from the proxy between it and the operator, because a
real server does not fail on demand. Every scenario ends the same way: each Model converges to
READY with exactly one Deployment, one Service and one autoscaler, and no Model's state ever
went backwards on the way (read from the server's own watch history).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from support.cluster import Cluster
from support.controllers import (
    DEPLOYMENTS,
    HPAS,
    MODELS,
    SCALED_OBJECTS,
    SERVICES,
    apply_documents,
    condition,
    run_pods,
)
from support.examples import example
from support.operator_process import OperatorProcess, eventually
from support.registry import LocalRegistry, require_tools

ORDER = {None: 0, "PENDING": 1, "DEPLOYING": 2, "READY": 3}


def documents(count: int) -> list[dict[str, Any]]:
    registry = example("Registry", "dockerhub")
    registry["spec"]["url"] = "http://127.0.0.1:9"
    models = []
    for index in range(count):
        model = example("Model", "docs-embedder")
        model["metadata"]["name"] = f"embedder-{index}"
        models.append(model)
    return [registry, example("ModelTemplate", "cpu-embedding"), *models]


async def converge(cluster: Cluster, operator: OperatorProcess, names: list[str]) -> None:
    """Play the controllers until every Model is READY; then check what exists."""
    # All three children first: the HPA decides how many pods the kubelet has to run.
    await eventually(
        lambda: all(
            cluster.get(resource, cluster.namespace, n)
            for n in names
            for resource in (DEPLOYMENTS, SERVICES, HPAS)
        ),
        60,
        "Deployments, Services and HPAs",
        operator,
    )
    for name in names:
        # Played kubelet: the subject is API faults across many Models, not their pods.
        await run_pods(cluster, cluster.namespace, name)

    def ready() -> bool:
        return all(
            ((cluster.get(MODELS, cluster.namespace, n) or {}).get("status") or {}).get("state")
            == "READY"
            for n in names
        )

    def states() -> str:
        found = {n: cluster.get(MODELS, cluster.namespace, n) or {} for n in names}
        return "all READY, but: " + ", ".join(
            f"{n} {(m.get('status') or {}).get('state')}/{condition(m).get('reason')}"
            for n, m in found.items()
        )

    await eventually(ready, 60, states, operator)
    for resource in (DEPLOYMENTS, SERVICES, HPAS):
        assert sorted(
            o["metadata"]["name"] for o in cluster.list(resource, cluster.namespace)
        ) == sorted(names), resource
    assert cluster.list(SCALED_OBJECTS, cluster.namespace) == []


def never_went_backwards(cluster: Cluster, names: list[str]) -> None:
    """From the API's own history: a Model's state only moves forward (its spec is unchanged)."""
    for name in names:
        states = [
            (e["object"].get("status") or {}).get("state")
            for _, resource, e in cluster.log
            if resource == MODELS
            and e["object"]["metadata"]["name"] == name
            and e["type"] != "DELETED"
        ]
        ranks = [ORDER.get(state, 0) for state in states]
        assert ranks == sorted(ranks), f"{name} went {states}"


@pytest.mark.parametrize(
    ("fault", "method", "path", "extra"),
    [
        (
            "500 on every first Deployment apply",
            "PATCH",
            r"/deployments/",
            {"code": 500, "times": 4},
        ),
        ("409 on status writes", "PATCH", r"/models/[^/]+/status", {"code": 409, "times": 4}),
        (
            "429 with Retry-After on Services",
            "PATCH",
            r"/services/",
            {"code": 429, "times": 4, "retry_after": 1},
        ),
        ("503 on Events", "POST", r"/events", {"code": 503, "times": 10}),
        (
            "slow HPA writes",
            "PATCH",
            r"/horizontalpodautoscalers/",
            {"code": 0, "times": None, "delay": 0.3},
        ),
        # Models carry no finalizer (they are level-based); templates carry the in-use one.
        (
            "500 on the template's finalizer",
            "PATCH",
            r"/modeltemplates/[^/]+$",
            {"code": 500, "times": 3},
        ),
    ],
)
async def test_api_errors_are_retried_until_everything_converges(
    cluster: Cluster,
    operator: OperatorProcess,
    fault: str,
    method: str,
    path: str,
    extra: dict[str, Any],
) -> None:
    injected = cluster.fail(method, path, **extra)
    names = [f"embedder-{i}" for i in range(3)]
    await apply_documents(cluster, documents(3))
    await converge(cluster, operator, names)
    assert injected.hits > 0, f"the fault '{fault}' was never hit"
    never_went_backwards(cluster, names)


async def test_dropped_and_expired_watches_are_resumed(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    names = [f"embedder-{i}" for i in range(2)]
    await apply_documents(cluster, documents(2))
    await eventually(
        lambda: all(cluster.get(DEPLOYMENTS, cluster.namespace, n) for n in names),
        30,
        "Deployments",
        operator,
    )
    # Watches dropped (an apiserver restart): changes made meanwhile are still seen.
    await cluster.drop_watches()
    await cluster.patch(
        MODELS,
        cluster.namespace,
        "embedder-0",
        {"spec": {"parameters": {"BATCH_SIZE": 7}}},
        manager="kubectl",
    )
    await eventually(
        lambda: any(
            e.get("value") == "7"
            for e in cluster.get(DEPLOYMENTS, cluster.namespace, "embedder-0")["spec"]["template"][
                "spec"
            ]["containers"][0]["env"]
        ),
        30,
        "change after drop",
        operator,
    )
    # History compacted: resuming is 410 Gone, so the operator must list again.
    await cluster.expire_history()
    await cluster.patch(
        MODELS,
        cluster.namespace,
        "embedder-1",
        {"spec": {"parameters": {"BATCH_SIZE": 9}}},
        manager="kubectl",
    )
    await eventually(
        lambda: any(
            e.get("value") == "9"
            for e in cluster.get(DEPLOYMENTS, cluster.namespace, "embedder-1")["spec"]["template"][
                "spec"
            ]["containers"][0]["env"]
        ),
        30,
        "change after 410",
        operator,
    )
    await converge(cluster, operator, names)


async def test_sigkill_in_the_middle_of_work_loses_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    names = [f"embedder-{i}" for i in range(20)]
    await apply_documents(cluster, documents(20))
    # After the first three Deployments, Deployment writes hang: the kill lands in the middle
    # of the burst, with work half done and requests in flight.
    cluster.fail("PATCH", r"/deployments/", code=0, times=None, delay=30, after=3)
    first = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
    await eventually(
        lambda: len(cluster.list(DEPLOYMENTS, cluster.namespace)) >= 3,
        30,
        "some Deployments",
        first,
    )
    await first.kill()
    half_done = len(cluster.list(DEPLOYMENTS, cluster.namespace))
    cluster.faults.clear()
    second = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
    try:
        await converge(cluster, second, names)
        never_went_backwards(cluster, names)
        assert half_done < len(names), "the kill was meant to land mid-way"
        # Converged: the restarted operator is idle, without a write.
        await asyncio.sleep(1.5)
        before = len(await cluster.logged_writes())
        await asyncio.sleep(2)
        assert cluster.writes()[before:] == []
        for name in names:
            assert condition(cluster.get(MODELS, cluster.namespace, name))["status"] == "True"
    finally:
        await second.stop()


async def test_registry_outage_during_verification(cluster: Cluster, tmp_path: Path) -> None:
    """An outage never un-verifies a version; a version first seen during one waits and recovers."""
    require_tools()
    local = await LocalRegistry(tmp_path / "registry").start()
    digest = local.push("acme/awesome-llm", "1.0.0", "weights")
    newer = local.push("acme/awesome-llm", "1.1.0", "newer weights")
    versions = "modelyard.dev/v1alpha1/modelversions"

    def version(name: str, number: str, published: str) -> dict[str, Any]:
        return {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": name, "namespace": cluster.namespace},
            "spec": {
                "model": "awesome-llm",
                "version": number,
                "registry": "local",
                "repository": "acme/awesome-llm",
                "digest": published,
                "tag": number,
            },
        }

    def reason(name: str) -> str | None:
        return condition(cluster.get(versions, cluster.namespace, name)).get("reason")

    operator = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
    try:
        await apply_documents(
            cluster,
            [
                {
                    "apiVersion": "modelyard.dev/v1alpha1",
                    "kind": "Registry",
                    "metadata": {"name": "local", "namespace": cluster.namespace},
                    "spec": {"url": local.url, "checkIntervalSeconds": 10},
                },
                version("v1", "1.0.0", digest),
            ],
        )
        await eventually(lambda: reason("v1") == "DigestVerified", 20, "verified", operator)
        verified = cluster.get(versions, cluster.namespace, "v1")
        # The registry goes away while the operator restarts and re-verifies everything.
        await local.stop()
        await operator.kill()
        operator = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
        await eventually(
            lambda: (
                condition(
                    cluster.get("modelyard.dev/v1alpha1/registries", cluster.namespace, "local")
                ).get("reason")
                == "Unreachable"
            ),
            20,
            "registry unreachable",
            operator,
        )
        await apply_documents(cluster, [version("v2", "1.1.0", newer)])
        await eventually(
            lambda: reason("v2") == "RegistryNotReady", 20, "new version waits", operator
        )
        # An outage un-verifies nothing (Models must not roll for it), and says it could not
        # check: RegistryReachable=False, only while it lasts.
        await eventually(
            lambda: (
                condition(cluster.get(versions, cluster.namespace, "v1"), "RegistryReachable").get(
                    "reason"
                )
                == "RegistryNotReady"
            ),
            30,
            "v1 says the registry cannot be asked",
            operator,
        )
        during = cluster.get(versions, cluster.namespace, "v1")
        assert during["status"]["image"] == verified["status"]["image"]
        assert condition(during) == condition(verified), "an outage un-verified nothing"
        # The registry is back: the next check finds it, and the waiting version verifies.
        await local.start()
        await eventually(
            lambda: reason("v2") == "DigestVerified", 40, "verified after the outage", operator
        )
        await eventually(
            lambda: (
                not condition(cluster.get(versions, cluster.namespace, "v1"), "RegistryReachable")
            ),
            30,
            "v1 checked again",
            operator,
        )
        assert condition(cluster.get(versions, cluster.namespace, "v1")) == condition(verified)
    finally:
        await operator.stop()
        await local.stop()
