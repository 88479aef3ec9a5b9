"""The soak's stage: the real cluster and node, two operator replicas sharing one Lease, and
what the driver has made on them, which the chaos and the checker read.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from soak_invariants import PROBE_INTERVAL
from soak_report import Report

from support.cluster import Cluster, RealNode, Session, grant_lease
from support.operator_process import OperatorProcess
from support.workloads import NODE_OPERATOR_CONFIG, registry_documents, template

Obj = dict[str, Any]
LEASES = "coordination.k8s.io/v1/leases"


class Soak:
    """What the driver, the chaos and the checker share: the cluster, the node, the replicas
    running now, and the Models the driver made and deleted (the checker's record of truth)."""

    def __init__(self, session: Session, cluster: Cluster, node: RealNode, work: Path) -> None:
        self.session = session
        self.cluster = cluster
        self.api = cluster.api
        self.ns = cluster.namespace
        self.node = node
        self.work = work
        self.report = Report()
        self.operators: dict[str, OperatorProcess] = {}
        self.models: set[str] = set()
        self.deleted: dict[str, float] = {}
        self.versions = 0

    def template(self) -> Obj:
        """The model server as the canary tests run it (1 worker, 50m CPU), rolled out by
        canary with a 10 s analysis, its probe the reranking contract's."""
        found = template(
            self.node,
            model_type="RERANKING",
            behaviour=False,
            rollout={"strategy": "Canary", "analysisSeconds": 10},
            startup_timeout=40,
        )
        found["metadata"]["namespace"] = self.ns
        return found

    def model(self, name: str) -> Obj:
        return {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Model",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "template": "served",
                "version": {"model": "model-server", "version": ">=1.0.0 <2.0.0"},
            },
        }

    async def publish(self, behaviour: str) -> None:
        """A new version of the model server that behaves so."""
        self.versions += 1
        number = f"1.0.{self.versions}"
        env = {
            "good": {"ANSWER": "conforming"},
            "off-contract": {"ANSWER": "wrong-shape"},
            "crashing": {"CRASH": "true"},
        }[behaviour]
        digest = await asyncio.to_thread(
            self.node.push, number, f"{behaviour}-{self.versions}", env
        )
        await asyncio.to_thread(
            self.api.apply,
            {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": f"server-{number}", "namespace": self.ns},
                "spec": {
                    "model": "model-server",
                    "version": number,
                    "registry": "local",
                    "repository": self.node.repository,
                    "digest": digest,
                },
            },
            "soak",
        )
        self.report.actions[f"publish {behaviour} version"] += 1

    def start_operator(self, name: str) -> OperatorProcess:
        directory = self.work / name
        directory.mkdir(exist_ok=True)
        config = {
            **NODE_OPERATOR_CONFIG,
            "probes": {
                **NODE_OPERATOR_CONFIG.get("probes", {}),
                "intervalSeconds": PROBE_INTERVAL,
                "retrySeconds": 2,
            },
            "watchIdleSeconds": 20,
        }
        process = OperatorProcess(
            self.cluster.operator_kubeconfig(self.work),
            directory,
            config=config,
            verbose=False,
            lease_namespace=self.ns,
            name=name,
        ).start()
        self.operators[name] = process
        return process

    async def set_up(self) -> None:
        await asyncio.to_thread(grant_lease, self.api, self.work, self.ns)
        for document in [*registry_documents(self.node), self.template()]:
            document.setdefault("metadata", {})["namespace"] = self.ns
            await asyncio.to_thread(self.api.apply, document, "soak")
        await self.publish("good")
        for index in range(3):
            await self.create_model(f"model-{index}")
        for name in ("replica-a", "replica-b"):
            self.start_operator(name)

    async def create_model(self, name: str) -> None:
        await asyncio.to_thread(self.api.apply, self.model(name), "soak")
        self.models.add(name)
        self.deleted.pop(name, None)
        self.report.actions["create a Model"] += 1

    def leader(self) -> str | None:
        lease = self.api.get(LEASES, self.ns, "modelyard-leader") or {}
        holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
        name = holder.rpartition("_")[0]
        return name if name in self.operators else None

    def count_outcomes(self) -> None:
        for operator in self.operators.values():
            self.report.rollbacks += operator.output.count("rollout RolledBack")
            self.report.promotions += operator.output.count("rollout Promoted")
