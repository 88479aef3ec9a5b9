"""The real cluster as tests see it: one control plane per session, one namespace per test.

The session starts the control plane once, installs the CRDs from crds/ (and a stand-in for
KEDA's ScaledObject CRD: KEDA itself does not run here, the tests play it), and sets up the
operator's identity exactly as the Helm chart does: a ServiceAccount bound to the ClusterRole
that `helm template` renders. The operator runs with that service account's token, through a
fault proxy, so every call it makes is authorised by the real server under the chart's RBAC.
Where the machine can run containers, a real node joins the cluster (kube-scheduler, a kubelet
on containerd, kube-proxy; `support.node`) with a local registry behind basic auth holding the
model server's image (`support.images`): pods run for real.

Each test gets a fresh namespace and its own proxy (its own request log and faults). At the
end its objects are removed — finalizers the operator would have cleared included — so the next
test's cluster-wide operator starts with nothing left over.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
import yaml

from support import containerd, control_plane, images
from support.api import Api, ApiRefusal, Obj, resource_path
from support.audit import OPERATOR_WRITES_POLICY, AuditLog
from support.audit import server_args as audit_args
from support.fault_proxy import Fault, FaultProxy, Served
from support.helm import Helm, helm_binary
from support.node import NODE_IP, Node, unavailable
from support.registry import LocalRegistry
from support.relay import Relay

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent
OPERATOR_NAMESPACE = "modelyard-system"
OPERATOR_ACCOUNT = "modelyard"
RELEASE = "modelyard"

MODELS = "modelyard.dev/v1alpha1/models"
TEMPLATES = "modelyard.dev/v1alpha1/modeltemplates"
VERSIONS = "modelyard.dev/v1alpha1/modelversions"
REGISTRIES = "modelyard.dev/v1alpha1/registries"
KEDA_CRD = "scaledobjects.keda.sh"
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"

#: What a test namespace is emptied of at the end, children before owners.
CLEANUP = (
    MODELS,
    TEMPLATES,
    VERSIONS,
    REGISTRIES,
    "apps/v1/deployments",
    "apps/v1/replicasets",
    "v1/pods",
    "v1/services",
    "autoscaling/v2/horizontalpodautoscalers",
    "keda.sh/v1alpha1/scaledobjects",
)


def render_chart(tmp: Path, *values: str) -> list[Obj]:
    """The chart's manifests, as `helm template` renders them with `values` (--set a=b)."""
    helm = Helm(helm_binary(tmp / "bin"), tmp)
    args = ["template", RELEASE, str(ROOT / "charts" / "modelyard"), "-n", OPERATOR_NAMESPACE]
    for value in values:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(helm.run(*args).stdout) if d]


def install_crds(api: Api) -> None:
    documents = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    documents.append(yaml.safe_load((SUPPORT / "keda-scaledobject-crd.yaml").read_text()))
    for crd in documents:
        api.apply(crd, "modelyard-tests")
    for crd in documents:
        api.wait_established(crd["metadata"]["name"])


def relaxed(crd: Obj) -> Obj:
    """`crd` with its schema reduced to "anything goes", as on a cluster that still has an old or
    hand-edited CRD: objects the real schema refuses are stored, and reach the operator."""
    loose = copy.deepcopy(crd)
    for version in loose["spec"]["versions"]:
        version["schema"] = {
            "openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            }
        }
    return loose


def install_relaxed_crds(api: Api) -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = relaxed(yaml.safe_load(path.read_text()))
        api.apply(crd, "modelyard-tests")
        api.wait_established(crd["metadata"]["name"])


def service_account_token(api: Api, namespace: str, account: str) -> str:
    """A token for the account, as `kubectl create token` asks for one."""
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 24 * 3600},
    }
    answer = api.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", request
    )
    return str(answer["status"]["token"])


def operator_identity(api: Api, tmp: Path, account: str = OPERATOR_ACCOUNT, *values: str) -> str:
    """The chart's ServiceAccount and RBAC (for `values`), applied; a token for the account."""
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    rendered = render_chart(tmp, f"serviceAccount.name={account}", *values)
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    for document in rendered:
        if document["kind"] not in wanted:
            continue
        if document["kind"] in ("Role", "RoleBinding"):
            namespace = document["metadata"]["namespace"]
            api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        if document["kind"].endswith("Binding"):
            # Tests install the chart for more than one account: a binding of the same name
            # keeps the accounts it already binds.
            resource = "rbac.authorization.k8s.io/v1/" + document["kind"].lower() + "s"
            namespace = document["metadata"].get("namespace")
            existing = api.get(resource, namespace, document["metadata"]["name"]) or {}
            kept = [s for s in existing.get("subjects") or [] if s not in document["subjects"]]
            document["subjects"] = [*document["subjects"], *kept]
        api.apply(document, "helm")
    return service_account_token(api, OPERATOR_NAMESPACE, account)


def grant_lease(api: Api, tmp: Path, namespace: str) -> Obj:
    """The chart's leader election Role and RoleBinding, in `namespace` instead of the
    operator's: each test gets a Lease of its own, with exactly the chart's permissions."""
    role: Obj = {}
    for document in render_chart(tmp):
        if document["kind"] in ("Role", "RoleBinding") and document["metadata"]["name"].endswith(
            "-leader-election"
        ):
            placed = {**document, "metadata": {**document["metadata"], "namespace": namespace}}
            api.apply(placed, "helm")
            if document["kind"] == "Role":
                role = placed
    return role


@dataclass
class RealNode:
    """The session's node, and the registry its pods pull the model server from."""

    node: Node
    registry: LocalRegistry
    images: images.Images
    #: The model server as pushed: `registry.host/repository@digest`, tag 1.0.0.
    digest: str
    #: Pods' way to the API server (`support.relay`).
    relay: Relay | None = None

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def credentials(self) -> tuple[str, str]:
        assert self.registry.auth is not None
        return self.registry.auth

    @property
    def repository(self) -> str:
        return images.MODEL_SERVER_REPOSITORY

    def push(self, tag: str, variant: str | None = None, env: dict[str, str] | None = None) -> str:
        """The model server pushed as `tag` (another `variant`: another digest, behaving as
        its `env` says); its digest."""
        return self.images.push_model_server(
            self.registry.host, self.credentials, tag, variant, env
        )

    @classmethod
    def start(
        cls,
        plane: control_plane.ControlPlane,
        api: Api,
        tmp: Path,
        *,
        registry_port: int | None = None,
        credentials: tuple[str, str] = ("modelyard-puller", "n0de-pull"),
    ) -> RealNode:
        registry = LocalRegistry(
            tmp / "node-registry", auth=credentials, access_log=tmp / "node-registry.log"
        )
        if registry_port is not None:
            registry.port = registry_port
        asyncio.run(registry.start())
        try:
            built = images.build()
            digest = built.push_model_server(registry.host, registry.auth or ("", ""), "1.0.0")
            started = Node(
                directory=tmp / "node",
                binary=control_plane.build(),
                kubeconfig=plane.node_kubeconfig,
                proxy_kubeconfig=plane.proxy_kubeconfig,
                name=plane.node_name,
                registry=registry.host,
                pause_archive=built.pause_archive(),
                runtime=containerd.binaries(),
            ).start()
        except BaseException:
            asyncio.run(registry.stop())
            raise
        real = cls(started, registry, built, digest)
        try:
            real.wait_ready(api)
            real.relay = in_cluster_api(plane, api)
        except BaseException:
            real.stop()
            raise
        return real

    def wait_ready(self, api: Api, timeout: float = 60) -> None:
        """Until the Node is Ready and the node lifecycle controller has lifted its not-ready
        taint (the scheduler places nothing before)."""
        deadline = time.monotonic() + timeout
        last: Obj | None = None
        while time.monotonic() < deadline:
            self.node.check()
            last = api.get("v1/nodes", None, self.name)
            status, spec = (last or {}).get("status", {}), (last or {}).get("spec", {})
            conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
            if conditions.get("Ready") == "True" and not spec.get("taints"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"node {self.name} not ready: {last and last.get('status')}")

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        self.node.stop()
        asyncio.run(self.registry.stop())


#: Where pods reach the API server: the node's address, relayed to the server's loopback port.
IN_CLUSTER_API_PORT = 6443
#: The node session's API server leaves the `kubernetes` Service's endpoints to the tests.
IN_CLUSTER_API_ARGS = ["--apiserver-arg=--endpoint-reconciler-type=none"]


def in_cluster_api(plane: control_plane.ControlPlane, api: Api) -> Relay:
    """Pods reach the API server as in any cluster: `KUBERNETES_SERVICE_HOST` (the
    `kubernetes` Service's ClusterIP), which kube-proxy sends to the endpoints written here —
    the relay on the node's address, in front of the server's loopback port."""
    port = int(plane.server.rsplit(":", 1)[1])
    relay = Relay((NODE_IP, IN_CLUSTER_API_PORT), ("127.0.0.1", port)).start()
    api.apply(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "modelyard-tests",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": IN_CLUSTER_API_PORT, "protocol": "TCP"}],
        },
        "modelyard-tests",
    )
    return relay


@dataclass
class Session:
    """What every test of the session shares: the control plane and the operator's identity,
    and the real node when this machine can run one."""

    plane: control_plane.ControlPlane
    api: Api
    token: str
    tmp: Path
    numbers: itertools.count[int] = field(default_factory=itertools.count)
    real_node: RealNode | None = None
    #: Why there is no node (None when there is one, or none was asked for).
    no_node: str | None = None
    #: Every write of the operator's service accounts, as the API server recorded it.
    audit: AuditLog | None = None

    @classmethod
    def start(cls, tmp: Path, args: list[str] | None = None, with_node: bool = False) -> Session:
        """A control plane with the CRDs and the operator's identity; `args` go to
        tests/cluster (a second, differently configured server for one test). `with_node`:
        a real node too, where the machine can run containers."""
        no_node = unavailable() if with_node else None
        policy, log = tmp / "audit-policy.yaml", tmp / "audit.log"
        policy.write_text(yaml.safe_dump(OPERATOR_WRITES_POLICY))
        args = [*audit_args(policy, log), *(args or [])]
        if with_node and no_node is None:
            args += ["--scheduler", *IN_CLUSTER_API_ARGS]
        plane = control_plane.start(tmp / "cluster", args)
        try:
            api = Api(plane.server, plane.pki)
            install_crds(api)
            token = operator_identity(api, tmp)
            real_node = RealNode.start(plane, api, tmp) if with_node and no_node is None else None
        except BaseException:
            plane.stop()
            raise
        return cls(
            plane, api, token, tmp, real_node=real_node, no_node=no_node, audit=AuditLog(log)
        )

    def stop(self) -> None:
        if self.real_node is not None:
            self.real_node.stop()
        self.plane.stop(grace=1)

    def namespace_name(self, test_name: str) -> str:
        """A DNS label unique in the session that still says which test made it."""
        stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower().removeprefix("test_"))[:40]
        return f"{stem.strip('-')}-{next(self.numbers)}"


class Cluster:
    """One test's view: its namespace, its proxy, and helpers that read like `kubectl`."""

    def __init__(self, session: Session, namespace: str) -> None:
        self.session = session
        self.api = session.api
        self.namespace = namespace
        self.proxy = FaultProxy(session.plane.server, session.plane.pki / "ca.crt").start()
        #: (resourceVersion, resource, watch event) for every change of a Model in the namespace,
        #: as the API server's own watch reported it.
        self.log: list[tuple[int, str, Obj]] = []
        self._recording = threading.Event()
        self._recorder: threading.Thread | None = None
        self.api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        # Pods are refused until the namespace's default ServiceAccount exists.
        deadline = time.monotonic() + 10
        while self.api.get("v1/serviceaccounts", namespace, "default") is None:
            assert time.monotonic() < deadline, "no default ServiceAccount"
            time.sleep(0.02)
        self._record(MODELS)

    # -- the proxy the operator goes through --------------------------------------------------

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def served(self) -> list[Served]:
        return list(self.proxy.served)

    @property
    def faults(self) -> list[Fault]:
        return self.proxy.faults

    def writes(self) -> list[Served]:
        return self.proxy.writes()

    async def logged_writes(self, timeout: float = 10) -> list[Served]:
        """The writes made so far, once the proxy has logged each answer: a status the test
        read back may be stored a moment before the proxy logs the write that stored it."""
        deadline = time.monotonic() + timeout
        while not self.proxy.writes_logged() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.proxy.writes()

    def fail(self, method: str, path: str, code: int = 500, **options: Any) -> Fault:
        return self.proxy.fail(method, path, code, **options)

    async def drop_watches(self) -> None:
        await self.proxy.drop_watches()

    async def expire_history(self) -> None:
        """As after an etcd compaction: resuming any watch from now is 410 Gone."""
        listing = await asyncio.to_thread(self.api.request, "GET", "/api/v1/namespaces")
        await self.proxy.expire_history(int(listing["metadata"]["resourceVersion"]) + 1)

    def operator_kubeconfig(self, directory: Path, token: str | None = None) -> Path:
        """A kubeconfig for the operator: the proxy, and the chart's service account's token."""
        path = directory / f"kubeconfig-{self.namespace}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "test", "cluster": {"server": self.url}}],
                    "users": [{"name": "operator", "user": {"token": token or self.session.token}}],
                    "contexts": [
                        {"name": "test", "context": {"cluster": "test", "user": "operator"}}
                    ],
                    "current-context": "test",
                }
            )
        )
        return path

    # -- reads and writes, as kubectl and the cluster's components make them -----------------

    def get(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        return self.api.get(resource, namespace, name)

    def list(
        self, resource: str, namespace: str | None = None, selector: str | None = None
    ) -> list[Obj]:
        return self.api.list(resource, namespace, selector)

    def in_namespace(self, manifest: Obj) -> Obj:
        """A copy of `manifest` placed in this test's namespace (examples say ml-team)."""
        placed = copy.deepcopy(manifest)
        if placed.get("kind") != "Namespace":
            placed.setdefault("metadata", {})["namespace"] = self.namespace
        return placed

    async def apply(self, manifest: Obj, manager: str = "kubectl") -> Obj:
        return await asyncio.to_thread(self.api.apply, manifest, manager)

    async def create(self, resource: str, manifest: Obj, manager: str = "test") -> Obj:
        return await asyncio.to_thread(self.api.create, resource, manifest, manager)

    async def patch(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch: Obj,
        *,
        subresource: str | None = None,
        manager: str = "test",
        merge: bool = False,
    ) -> Obj:
        return await asyncio.to_thread(
            lambda: self.api.patch(
                resource,
                namespace,
                name,
                patch,
                subresource=subresource,
                manager=manager,
                merge=merge,
            )
        )

    async def remove(self, resource: str, namespace: str | None, name: str) -> None:
        """Delete (in the background, as kubectl does); finalizers and the garbage collector
        decide when it is gone."""
        await asyncio.to_thread(self.api.delete, resource, namespace, name)

    async def gone(
        self, resource: str, namespace: str | None, name: str, timeout: float = 30
    ) -> None:
        await asyncio.to_thread(self.api.wait_gone, resource, namespace, name, timeout)

    # -- history ------------------------------------------------------------------------------

    def _record(self, resource: str) -> None:
        listing = self.api.request("GET", resource_path(resource, self.namespace))
        since = listing["metadata"]["resourceVersion"]

        def record() -> None:
            nonlocal since
            while not self._recording.is_set():
                try:
                    for event in self.api.watch(resource, self.namespace, since):
                        if self._recording.is_set():
                            return
                        if event.get("type") == "ERROR":
                            break
                        version = event["object"]["metadata"]["resourceVersion"]
                        since = version
                        if event.get("type") != "BOOKMARK":
                            self.log.append((int(version), resource, event))
                except (OSError, ValueError, ApiRefusal, urllib3.exceptions.HTTPError):
                    time.sleep(0.1)  # the server went away (end of session) or restarted

        self._recorder = threading.Thread(target=record, daemon=True, name="history")
        self._recorder.start()

    # -- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        self._recording.set()
        self.proxy.stop()
        for resource in (TEMPLATES, MODELS):
            for obj in self._safe_list(resource):
                if obj["metadata"].get("finalizers"):
                    self._quietly(
                        self.api.patch,
                        resource,
                        self.namespace,
                        obj["metadata"]["name"],
                        {"metadata": {"finalizers": None}},
                    )
        for resource in CLEANUP:
            # A collection of 1,000 Models is deleted one by one in the server, behind its
            # controllers' work: minutes on a loaded machine, so a long timeout, and on
            # timeout the namespace's deletion finishes the job.
            self._quietly(
                lambda path: self.api.request("DELETE", path, timeout=180),
                resource_path(resource, self.namespace),
            )
        self._quietly(self.api.delete, "v1/namespaces", None, self.namespace)

    def _safe_list(self, resource: str) -> list[Obj]:
        try:
            return self.api.list(resource, self.namespace)
        except ApiRefusal:
            return []

    @staticmethod
    def _quietly(call: Any, *args: Any) -> None:
        with contextlib.suppress(ApiRefusal, urllib3.exceptions.TimeoutError):
            call(*args)
