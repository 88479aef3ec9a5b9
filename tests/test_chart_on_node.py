"""The operator as users run it: its image, installed by real helm from the chart, as pods on the
real node — two replicas, one Lease, and the handovers a platform team puts it through.

The image is built without Docker (`image/build.sh`: Debian's Python, the package's wheels,
umoci) and pushed to the node's registry; the kubelet pulls it with an imagePullSecret, runs it
under the chart's security settings (non-root, read-only root), and the pods reach the API
server the in-cluster way (service account token, the `kubernetes` Service through kube-proxy).
They run under the chart's own RBAC, with authorization on. From the pods' network the test
registry's loopback address is their own, so the Registry reports Unreachable; the template
pins its image by digest and the pull Secret does not wait for the registry to answer, so the
Model is served all the same (registry outages are test_faults.py's subject).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import operator_image
from support.cluster import Cluster, RealNode
from support.controllers import DEPLOYMENTS, MODELS, apply_documents, model_state
from support.helm import Helm, helm_binary
from support.operator_process import eventually
from support.workloads import model, served_documents

ROOT = Path(__file__).resolve().parent.parent
RELEASE, RELEASE_NS = "ha", "modelyard-ha"
LEASES = "coordination.k8s.io/v1/leases"
PODS = "v1/pods"


def operator_pods(cluster: Cluster) -> list[dict[str, Any]]:
    return [
        p
        for p in cluster.list(PODS, RELEASE_NS, f"app.kubernetes.io/instance={RELEASE}")
        if not p["metadata"].get("deletionTimestamp")
    ]


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def holder(cluster: Cluster) -> str:
    lease = cluster.get(LEASES, RELEASE_NS, "modelyard-leader") or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def holding_pod(cluster: Cluster) -> str:
    """The pod named by the Lease's holder (`<pod>_<id>`), or '' while nobody holds it."""
    return holder(cluster).rpartition("_")[0]


class LeaseWatch:
    """Samples the Lease every 0.1 s in the background: the longest time nobody held it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.samples: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        # The caller saw the new holder; the thread's last sample may be older than that.
        self.samples.append((time.monotonic(), holder(self.cluster)))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), holder(self.cluster)))
            time.sleep(0.1)

    def longest_gap(self) -> float:
        longest, since = 0.0, None
        for at, who in self.samples:
            if not who and since is None:
                since = at
            elif who and since is not None:
                longest, since = max(longest, at - since), None
        assert since is None, "nobody holds the Lease at the end"
        return longest

    def holders(self) -> list[str]:
        seen: list[str] = []
        for _, who in self.samples:
            if who and (not seen or seen[-1] != who):
                seen.append(who)
        return seen


def values(tmp_path: Path, repository: str, tag: str, **extra: Any) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
                "imagePullSecrets": [{"name": "operator-pull"}],
                # The test cluster's CRDs and users' roles are already there (not Helm's).
                "crds": {"install": False},
                "rbac": {"userRoles": False},
                # Pods here get no DNS: Models are probed at their ClusterIPs.
                "config": {
                    "probes": {
                        "serviceAddress": "{clusterIP}:{port}",
                        "intervalSeconds": 5,
                        "retrySeconds": 2,
                    }
                },
                **extra,
            }
        )
    )
    return path


@pytest.mark.timeout(600)
async def test_the_chart_runs_two_replicas_that_hand_over_on_delete_and_upgrade(
    cluster: Cluster, real_node: RealNode, tmp_path: Path
) -> None:
    layout, tag, built = await asyncio.to_thread(operator_image.build)
    repository = await asyncio.to_thread(
        operator_image.push, layout, tag, real_node.registry.host, real_node.credentials
    )
    print(
        f"operator image: {operator_image.compressed_megabytes(layout):.0f} MB compressed, "
        + (f"built in {built:.0f} s" if built else "cached")
    )
    username, password = real_node.credentials
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    await cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NS}})
    await cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "operator-pull", "namespace": RELEASE_NS},
            "stringData": {
                ".dockerconfigjson": json.dumps(
                    {"auths": {real_node.registry.host: {"auth": auth}}}
                )
            },
        }
    )
    helm = Helm(helm_binary(tmp_path / "bin"), tmp_path, cluster.session.plane.kubeconfig)
    chart = str(ROOT / "charts" / "modelyard")
    release = [RELEASE, chart, "--namespace", RELEASE_NS, "--wait", "--timeout", "180s"]
    try:
        started = time.monotonic()
        await asyncio.to_thread(
            helm.run, "install", *release, "-f", str(values(tmp_path, repository, tag))
        )
        pods = await eventually(
            lambda: (
                (found := operator_pods(cluster))
                and len(found) == 2
                and all(ready(p) for p in found)
                and found
            ),
            60,
            "two Ready operator pods",
        )
        leader = await eventually(lambda: holding_pod(cluster), 30, "a Lease holder")
        print(f"helm install --wait: two Ready replicas in {time.monotonic() - started:.1f} s")
        assert leader in {p["metadata"]["name"] for p in pods}
        assert {p["spec"]["nodeName"] for p in pods} == {real_node.name}

        # The leader reconciles a Model on the node, through to a conforming probe answer.
        await apply_documents(cluster, served_documents(real_node))
        await eventually(
            lambda: model_state(cluster, "served-model") == ("READY", "Available"),
            90,
            lambda: f"served-model READY (now {model_state(cluster, 'served-model')})",
        )

        # kubectl delete pod of the leader: SIGTERM, the Lease given up, the other takes it.
        with LeaseWatch(cluster) as watch:
            deleted = time.monotonic()
            await asyncio.to_thread(cluster.api.delete, PODS, RELEASE_NS, leader)
            await eventually(
                lambda: holding_pod(cluster) not in ("", leader), 30, "the standby leads"
            )
            handover = time.monotonic() - deleted
        print(f"leader pod deleted → the other replica holds the Lease in {handover:.2f} s")
        assert handover <= 3.0
        assert watch.longest_gap() <= 3.0
        # The Deployment replaces the deleted pod; it stands by.
        await eventually(
            lambda: len([p for p in operator_pods(cluster) if ready(p)]) == 2,
            90,
            "a replacement replica Ready",
        )

        # A rolling upgrade: each old pod goes after its replacement is Ready; the Lease
        # changes hands without a gap longer than a handover.
        old = {p["metadata"]["name"] for p in operator_pods(cluster)}
        with LeaseWatch(cluster) as watch:
            upgraded = values(tmp_path, repository, tag, podAnnotations={"rollout": "2"})
            await asyncio.to_thread(helm.run, "upgrade", *release, "-f", str(upgraded))
            # helm returns once the new pods are Ready; the old leader may still be on its
            # way out (it gives the Lease up on SIGTERM): the handover ends with a new holder.
            await eventually(
                lambda: holding_pod(cluster) not in ("", *old),
                30,
                "a new replica holding the Lease after the upgrade",
            )
            await asyncio.sleep(1)
        gap = watch.longest_gap()
        went = " → ".join(h.rpartition("_")[0] for h in watch.holders())
        print(f"helm upgrade: the Lease went {went}; longest time without a holder {gap:.2f} s")
        assert gap <= 3.0
        after = {p["metadata"]["name"] for p in operator_pods(cluster)}
        assert holding_pod(cluster) in after and not after & old

        # The new leader does the work; the served Model never stopped being READY.
        assert model_state(cluster, "served-model") == ("READY", "Available")
        await apply_documents(cluster, [model("second-model")])
        await eventually(
            lambda: cluster.get(DEPLOYMENTS, cluster.namespace, "second-model"),
            30,
            "the new leader's Deployment",
        )
        assert cluster.get(MODELS, cluster.namespace, "second-model") is not None
    finally:
        await asyncio.to_thread(
            helm.run, "uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", check=False
        )
        await asyncio.to_thread(cluster.api.delete, "v1/namespaces", None, RELEASE_NS)
