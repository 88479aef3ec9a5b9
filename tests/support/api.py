"""The tests' own client of the real API server: an administrator, synchronous, small.

Tests read and write through this client as users and the cluster's other components would
(`kubectl apply`, the kubelet writing pod status). It is synchronous on purpose: tests poll
state inside plain lambdas, and the fault proxy the operator goes through runs on its own thread,
so a blocking read here never stalls the operator's traffic.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

Obj = dict[str, Any]

#: group/version/plural of every cluster-scoped resource the tests touch; the rest are namespaced.
CLUSTER_SCOPED = frozenset(
    {
        "v1/namespaces",
        "v1/nodes",
        "apiextensions.k8s.io/v1/customresourcedefinitions",
        "rbac.authorization.k8s.io/v1/clusterroles",
        "rbac.authorization.k8s.io/v1/clusterrolebindings",
        "scheduling.k8s.io/v1/priorityclasses",
        "admissionregistration.k8s.io/v1/validatingadmissionpolicies",
        "admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
        "networking.k8s.io/v1/servicecidrs",
    }
)

#: (apiVersion, kind) → group/version/plural, for applying manifests.
RESOURCES: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "v1/namespaces",
    ("v1", "Pod"): "v1/pods",
    ("v1", "Service"): "v1/services",
    ("v1", "Secret"): "v1/secrets",
    ("v1", "ConfigMap"): "v1/configmaps",
    ("policy/v1", "PodDisruptionBudget"): "policy/v1/poddisruptionbudgets",
    ("coordination.k8s.io/v1", "Lease"): "coordination.k8s.io/v1/leases",
    ("discovery.k8s.io/v1", "EndpointSlice"): "discovery.k8s.io/v1/endpointslices",
    ("v1", "ServiceAccount"): "v1/serviceaccounts",
    ("v1", "ResourceQuota"): "v1/resourcequotas",
    ("v1", "LimitRange"): "v1/limitranges",
    ("v1", "Event"): "v1/events",
    ("apps/v1", "Deployment"): "apps/v1/deployments",
    ("apps/v1", "ReplicaSet"): "apps/v1/replicasets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "autoscaling/v2/horizontalpodautoscalers",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/v1alpha1/scaledobjects",
    ("modelyard.dev/v1alpha1", "Model"): "modelyard.dev/v1alpha1/models",
    ("modelyard.dev/v1alpha1", "ModelTemplate"): "modelyard.dev/v1alpha1/modeltemplates",
    ("modelyard.dev/v1alpha1", "ModelVersion"): "modelyard.dev/v1alpha1/modelversions",
    ("modelyard.dev/v1alpha1", "Registry"): "modelyard.dev/v1alpha1/registries",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): (
        "apiextensions.k8s.io/v1/customresourcedefinitions"
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "rbac.authorization.k8s.io/v1/clusterroles",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): (
        "rbac.authorization.k8s.io/v1/clusterrolebindings"
    ),
    ("rbac.authorization.k8s.io/v1", "Role"): "rbac.authorization.k8s.io/v1/roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rbac.authorization.k8s.io/v1/rolebindings",
    ("scheduling.k8s.io/v1", "PriorityClass"): "scheduling.k8s.io/v1/priorityclasses",
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): (
        "admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    ),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): (
        "admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
    ),
}

#: Kinds built into Kubernetes take strategic merge patches (lists of containers merge by name,
#: as `kubectl patch` does); custom resources only take JSON merge patches.
BUILT_IN_GROUPS = ("v1/", "apps/", "autoscaling/", "rbac.", "scheduling.", "admissionregistration.")


class ApiRefusal(Exception):  # noqa: N818 -- it is the server's answer, not our error
    """A request the API server refused, with its status code, reason and message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message


def resource_of(manifest: Obj) -> str:
    return RESOURCES[(manifest["apiVersion"], manifest["kind"])]


def resource_path(
    resource: str, namespace: str | None = None, name: str | None = None, sub: str | None = None
) -> str:
    """`apps/v1/deployments`, `ns`, `name` → `/apis/apps/v1/namespaces/ns/deployments/name`."""
    group_version, plural = resource.rsplit("/", 1)
    prefix = f"/api/{group_version}" if group_version == "v1" else f"/apis/{group_version}"
    scope = f"/namespaces/{namespace}" if namespace and resource not in CLUSTER_SCOPED else ""
    path = f"{prefix}{scope}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


class Api:
    """An administrator's connection: a client certificate in system:masters."""

    def __init__(self, server: str, pki: Path) -> None:
        self.server = server.rstrip("/")
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._pool = urllib3.PoolManager(ssl_context=context, maxsize=8, retries=False)
        #: The `Warning` headers of the last response (deprecations, unknown formats, ...).
        self.warnings: list[str] = []

    def raw(
        self, method: str, path: str, *, query: dict[str, str] | None = None, timeout: float = 30
    ) -> bytes:
        """The answer's bytes as served (a pprof profile, a log), failing on an error status."""
        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        response = self._pool.request(method, url, timeout=timeout)
        if response.status >= 400:
            raise ApiRefusal(response.status, "", response.data.decode(errors="replace")[:500])
        data: bytes = response.data
        return data

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Obj:
        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", "Content-Type": content_type}
        # Like client-go (and so kubectl): 429 is retried after its Retry-After, a few times.
        # The server answers it while a new CRD's storage initialises, for instance.
        for attempt in range(10):
            response = self._pool.request(method, url, body=data, headers=headers, timeout=timeout)
            if response.status != 429 or attempt == 9:
                break
            time.sleep(min(1.0, float(response.headers.get("Retry-After") or 0.1)))
        self.warnings = list(response.headers.getlist("Warning"))
        try:
            payload: Obj = json.loads(response.data) if response.data else {}
        except ValueError:  # "404 page not found" for a group that is not served
            payload = {"message": response.data.decode(errors="replace")[:500]}
        if response.status >= 400:
            raise ApiRefusal(
                response.status,
                str(payload.get("reason") or response.reason),
                str(payload.get("message") or response.data[:500]),
            )
        return payload

    def text(self, path: str) -> str:
        """A plain-text answer, such as a pod's log (`kubectl logs`)."""
        response = self._pool.request("GET", self.server + path, timeout=30)
        if response.status >= 400:
            raise ApiRefusal(response.status, str(response.reason), response.data.decode()[:500])
        return str(response.data.decode(errors="replace"))

    # -- reads --------------------------------------------------------------------------------

    def get(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.request("GET", resource_path(resource, namespace, name))
        except ApiRefusal as refusal:
            if refusal.code == 404:
                return None
            raise

    def list(
        self, resource: str, namespace: str | None = None, selector: str | None = None
    ) -> list[Obj]:
        query = {"labelSelector": selector} if selector else None
        listing = self.request("GET", resource_path(resource, namespace), query=query)
        items: list[Obj] = listing.get("items") or []
        kind = listing.get("kind", "").removesuffix("List")
        api_version = listing.get("apiVersion")
        for item in items:  # lists leave them out; single GETs have them
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
        return sorted(
            items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    def watch(
        self, resource: str, namespace: str | None, resource_version: str, seconds: int = 2
    ) -> Iterator[Obj]:
        """Watch events from `resource_version` on, until the server ends the stream after
        `seconds` (short, so a caller that stops listening is never blocked for long)."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(seconds),
        }
        url = self.server + resource_path(resource, namespace) + f"?{urlencode(query)}"
        response = self._pool.request(
            "GET", url, preload_content=False, timeout=urllib3.Timeout(connect=5, read=None)
        )
        try:
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()

    # -- writes -------------------------------------------------------------------------------

    def apply(
        self, manifest: Obj, manager: str = "kubectl", *, dry_run: bool = False, force: bool = True
    ) -> Obj:
        """Server-side apply with strict field validation, as `kubectl apply --server-side`."""
        metadata = manifest["metadata"]
        query = {"fieldManager": manager, "fieldValidation": "Strict"}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        path = resource_path(resource_of(manifest), metadata.get("namespace"), metadata["name"])
        return self.request(
            "PATCH", path, manifest, query=query, content_type="application/apply-patch+yaml"
        )

    def create(self, resource: str, manifest: Obj, manager: str = "test") -> Obj:
        namespace = (manifest.get("metadata") or {}).get("namespace")
        return self.request(
            "POST", resource_path(resource, namespace), manifest, query={"fieldManager": manager}
        )

    def patch(
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
        """Strategic merge for built-in kinds (as `kubectl patch`), JSON merge patch for custom
        resources or when `merge` is asked for (lists are then replaced whole)."""
        strategic = resource.startswith(BUILT_IN_GROUPS) and not merge
        content_type = (
            "application/strategic-merge-patch+json"
            if strategic
            else "application/merge-patch+json"
        )
        return self.request(
            "PATCH",
            resource_path(resource, namespace, name, subresource),
            patch,
            query={"fieldManager": manager},
            content_type=content_type,
        )

    def delete(
        self, resource: str, namespace: str | None, name: str, propagation: str = "Background"
    ) -> bool:
        try:
            self.request(
                "DELETE",
                resource_path(resource, namespace, name),
                {"propagationPolicy": propagation},
            )
        except ApiRefusal as refusal:
            if refusal.code == 404:
                return False
            raise
        return True

    def wait_gone(
        self, resource: str, namespace: str | None, name: str, timeout: float = 30
    ) -> None:
        deadline = time.monotonic() + timeout
        while self.get(resource, namespace, name) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{resource} {namespace}/{name} still exists after {timeout} s"
                )
            time.sleep(0.05)

    def wait_established(self, crd_name: str, timeout: float = 30) -> None:
        """A CRD is usable once its names are accepted and it is Established."""
        resource = "apiextensions.k8s.io/v1/customresourcedefinitions"
        deadline = time.monotonic() + timeout
        while True:
            crd = self.get(resource, None, crd_name) or {}
            conditions = {
                c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []
            }
            if conditions.get("Established") == "True":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"CRD {crd_name} not Established: {conditions}")
            time.sleep(0.05)
