"""Two replicas, one Lease: exactly one process writes, and another takes over when it goes.

Both processes run `modelyard run --leader-elect` under the chart's service account and roles
(the Lease Role placed in the test's namespace, so each test has a Lease of its own), against
the real API server. Who wrote what is read from the server's audit log, by User-Agent: the
processes share a service account, as a Deployment's replicas do.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from support.audit import WRITE_VERBS, Request
from support.cluster import Cluster, grant_lease
from support.controllers import DEPLOYMENTS, HPAS, MODELS, SERVICES, apply_documents
from support.examples import example
from support.operator_process import OperatorProcess, eventually
from test_operator import embedding_documents, offline_registry

LEASES = "coordination.k8s.io/v1/leases"
BURST = 1000
#: The order a Model's state moves in while nothing about it changes.
STATE_ORDER = {None: 0, "PENDING": 1, "DEPLOYING": 2, "READY": 3}


def leader_metric(operator: OperatorProcess) -> float | None:
    found = re.search(r"^modelyard_leader (\S+)$", operator.metrics(), re.M)
    return float(found.group(1)) if found else None


def holder(cluster: Cluster) -> str:
    lease = cluster.get(LEASES, cluster.namespace, "modelyard-leader") or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def writes(cluster: Cluster, since: float = 0.0) -> list[Request]:
    """The operators' writes to the test's namespace (not the election's own)."""
    audit = cluster.session.audit
    assert audit is not None
    return [
        r
        for r in audit.read()
        if r.verb in WRITE_VERBS
        and r.namespace == cluster.namespace
        and r.resource != "leases"
        and r.at >= since
    ]


def agent_of(name: str) -> re.Pattern[str]:
    return re.compile(rf"^modelyard/{re.escape(name)}_[0-9a-f]{{8}}$")


async def replicas(cluster: Cluster, tmp_path: Path, **config: Any) -> dict[str, OperatorProcess]:
    await asyncio.to_thread(grant_lease, cluster.api, tmp_path, cluster.namespace)
    kubeconfig = cluster.operator_kubeconfig(tmp_path)
    started = {}
    for name in ("replica-a", "replica-b"):
        directory = tmp_path / name
        directory.mkdir()
        started[name] = OperatorProcess(
            kubeconfig,
            directory,
            config=config or None,
            verbose=False,
            lease_namespace=cluster.namespace,
            name=name,
        ).start()
    return started


async def leader_of(
    cluster: Cluster, operators: dict[str, OperatorProcess], timeout: float = 30
) -> str:
    """The replica holding the Lease, once exactly one says it leads."""

    def settled() -> str | None:
        name = holder(cluster).rpartition("_")[0]
        if name not in operators:
            return None
        flags = {n: leader_metric(o) for n, o in operators.items() if o.process.poll() is None}
        if flags.get(name) == 1 and all(v == 0 for n, v in flags.items() if n != name):
            return name
        return None

    found: str = await eventually(settled, timeout, "one leader", operators["replica-a"])
    return found


async def nobody_leads(operators: dict[str, OperatorProcess], leader: str) -> None:
    await eventually(
        lambda: all(leader_metric(o) == 0 for o in operators.values()),
        20,
        "no replica leads",
        operators[leader],
    )


async def stop_all(operators: dict[str, OperatorProcess]) -> None:
    await asyncio.gather(*(o.stop() for o in operators.values()))


async def test_one_replica_leads_and_a_clean_stop_hands_over_within_seconds(
    cluster: Cluster, tmp_path: Path
) -> None:
    operators = await replicas(cluster, tmp_path)
    try:
        leader = await leader_of(cluster, operators)
        standby = next(n for n in operators if n != leader)
        await apply_documents(cluster, embedding_documents())
        await eventually(
            lambda: cluster.get(HPAS, cluster.namespace, "docs-embedder"),
            20,
            "children",
            operators[leader],
        )
        made = writes(cluster)
        assert made and all(agent_of(leader).match(w.agent) for w in made), {w.agent for w in made}

        stopped = time.monotonic()
        await operators[leader].stop()
        await eventually(lambda: holder(cluster).startswith(f"{standby}_"), 10, "the standby leads")
        handover = time.monotonic() - stopped
        assert handover <= 3.0, f"SIGTERM handed over in {handover:.1f} s"
        print(f"SIGTERM → the standby holds the Lease: {handover:.2f} s")
        # The Lease is written first, the gauge set once the write is answered.
        await eventually(
            lambda: leader_metric(operators[standby]) == 1, 5, "modelyard_leader 1 on it"
        )
        assert "released Lease" in operators[leader].output

        # The new leader does the work: a new Model gets its children from it.
        after = time.time()
        second = example("Model", "docs-embedder")
        second["metadata"]["name"] = "second-embedder"
        await apply_documents(cluster, [second])
        await eventually(
            lambda: cluster.get(DEPLOYMENTS, cluster.namespace, "second-embedder"),
            20,
            "the new leader's Deployment",
            operators[standby],
        )
        assert all(agent_of(standby).match(w.agent) for w in writes(cluster, after))
    finally:
        await stop_all(operators)


def converged(cluster: Cluster) -> int:
    """How many of the burst's Models have every child and a status of this generation."""
    ns = cluster.namespace
    children = [
        {o["metadata"]["name"] for o in cluster.list(resource, ns)}
        for resource in (DEPLOYMENTS, SERVICES, HPAS)
    ]
    done = 0
    for model in cluster.list(MODELS, ns):
        name = model["metadata"]["name"]
        status = model.get("status") or {}
        if (
            all(name in names for names in children)
            and status.get("observedGeneration") == model["metadata"]["generation"]
        ):
            done += 1
    return done


@pytest.mark.timeout(420)
async def test_killed_leader_mid_burst_is_replaced_and_every_model_converges(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SIGKILL of the leader while it creates 1,000 Models' children: the standby takes over
    within the Lease's duration plus a few seconds, every Model converges with exactly one of
    each child, no status goes backwards, and the two never write in the same second."""
    operators = await replicas(cluster, tmp_path)
    ns = cluster.namespace
    try:
        leader = await leader_of(cluster, operators)
        standby = next(n for n in operators if n != leader)
        await apply_documents(
            cluster, [offline_registry(), example("ModelTemplate", "cpu-embedding")]
        )
        models = []
        for index in range(BURST):
            model = example("Model", "docs-embedder")
            model["metadata"]["name"] = f"model-{index}"
            models.append(cluster.in_namespace(model))
        creating = asyncio.gather(*(cluster.apply(m) for m in models))

        def deployments_by_leader() -> int:
            return sum(
                1
                for w in writes(cluster)
                if w.resource == "deployments" and agent_of(leader).match(w.agent)
            )

        await eventually(
            lambda: deployments_by_leader() >= BURST // 4, 120, "a quarter of the burst"
        )
        killed, killed_at = time.monotonic(), time.time()
        await operators[leader].kill()
        await creating
        await eventually(lambda: holder(cluster).startswith(f"{standby}_"), 30, "the standby leads")
        takeover = time.monotonic() - killed
        assert takeover <= 15 + 5, f"took over {takeover:.1f} s after SIGKILL"
        await eventually(
            lambda: converged(cluster) == BURST,
            240,
            lambda: f"every Model converged ({converged(cluster)} of {BURST})",
            operators[standby],
        )
        settled = time.monotonic() - killed
        print(
            f"SIGKILL at {deployments_by_leader()} Deployments: standby leads after "
            f"{takeover:.1f} s; all {BURST} Models converged {settled:.1f} s after the kill"
        )
    finally:
        await stop_all(operators)

    # Exactly one of each child per Model, none left over.
    for resource in (DEPLOYMENTS, SERVICES, HPAS):
        names = sorted(o["metadata"]["name"] for o in cluster.list(resource, ns))
        assert names == sorted(f"model-{i}" for i in range(BURST)), resource

    # No status went backwards, as the server's watch reported every change.
    seen: dict[str, tuple[int, int]] = {}
    for _, _, event in sorted(cluster.log, key=lambda entry: entry[0]):
        obj = event["object"]
        status = obj.get("status") or {}
        rank = (status.get("observedGeneration") or 0, STATE_ORDER.get(status.get("state"), 0))
        name = obj["metadata"]["name"]
        assert rank >= seen.get(name, (0, 0)), f"{name}: {seen.get(name)} → {rank}"
        seen[name] = rank

    # Writes of the two processes: the leader's all before its death, the standby's after,
    # never in the same second.
    made = writes(cluster)
    by_leader = [w.at for w in made if agent_of(leader).match(w.agent)]
    by_standby = [w.at for w in made if agent_of(standby).match(w.agent)]
    assert len(by_leader) + len(by_standby) == len(made), {w.agent for w in made}
    assert by_leader and by_standby
    assert max(by_leader) <= killed_at + 1
    assert int(max(by_leader)) < int(min(by_standby)), (max(by_leader), min(by_standby))


async def test_a_leader_that_cannot_renew_stops_writing_before_anyone_could_take_over(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Every Lease renewal refused (the API server overloaded, a network partition): after
    the renew deadline (10 s) the leader stands by and writes nothing — before its Lease
    could expire (15 s) for the other replica. Once renewals go through, a leader is back
    and the work done meanwhile is caught up."""
    operators = await replicas(cluster, tmp_path)
    try:
        leader = await leader_of(cluster, operators)
        await apply_documents(cluster, embedding_documents())
        await eventually(
            lambda: cluster.get(HPAS, cluster.namespace, "docs-embedder"), 20, "children"
        )
        refused = cluster.fail("PUT", r"/leases/modelyard-leader$", 503, times=None)
        cut_off = time.monotonic()
        await nobody_leads(operators, leader)
        stood_by = time.monotonic() - cut_off
        assert stood_by <= 10 + 2 + 1, f"stood by {stood_by:.1f} s after renewals failed"
        assert "lost Lease" in operators[leader].output

        quiet_since = time.time()
        second = example("Model", "docs-embedder")
        second["metadata"]["name"] = "second-embedder"
        await apply_documents(cluster, [second])
        await asyncio.sleep(3)
        assert cluster.get(DEPLOYMENTS, cluster.namespace, "second-embedder") is None
        assert writes(cluster, quiet_since) == [], "nobody leads, nobody writes"

        cluster.faults.remove(refused)
        await leader_of(cluster, operators)
        await eventually(
            lambda: cluster.get(DEPLOYMENTS, cluster.namespace, "second-embedder"),
            20,
            "the Deployment, once a replica leads again",
        )
    finally:
        await stop_all(operators)


async def test_an_election_whose_looks_fail_oddly_stands_by_and_leads_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A Lease answered with a 200 that is not JSON (a proxy's error page), then a login that
    fails (a kubeconfig or token file rotated badly): each is a failed look at the Lease, said
    once. The leader stands by at its renew deadline (nobody may write), both processes live
    on, and once the Lease can be read again a replica leads and the work goes on."""
    operators = await replicas(cluster, tmp_path)
    try:
        leader = await leader_of(cluster, operators)
        lease = r"/leases/modelyard-leader$"
        page = cluster.fail("GET", lease, 200, times=None, body=b"<html>502 Bad Gateway</html>")
        await nobody_leads(operators, leader)
        assert "not JSON" in operators[leader].output
        cluster.faults.remove(page)
        leader = await leader_of(cluster, operators)

        kubeconfig = cluster.operator_kubeconfig(tmp_path)
        good = kubeconfig.read_text()
        kubeconfig.write_text("clusters: [not a kubeconfig\n")
        refused = cluster.fail("GET", lease, 401, times=None)
        await nobody_leads(operators, leader)
        assert "logging in again failed" in operators[leader].output
        assert all(o.process is not None and o.process.poll() is None for o in operators.values())

        kubeconfig.write_text(good)
        cluster.faults.remove(refused)
        await leader_of(cluster, operators)
        await apply_documents(cluster, embedding_documents())
        await eventually(
            lambda: cluster.get(DEPLOYMENTS, cluster.namespace, "docs-embedder"),
            20,
            "work done once a replica leads again",
        )
    finally:
        await stop_all(operators)
