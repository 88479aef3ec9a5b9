"""The only module that talks to the Kubernetes API.

One `Kube` per process: building an API client per call doubles reaction time (DESIGN.md §3).
Calls go through the official client's `ApiClient.call_api` with explicit paths, so any kind —
ours, KEDA's, built-in — is reached the same way without per-kind client classes or discovery
round-trips, and run in worker threads because that client is synchronous.

Every failure leaves this module as an `ApiError` that says whether retrying can help
(409, 429, 5xx, timeouts) or not (422 invalid, 403 forbidden, 404 on a write): the one error
taxonomy the reconcilers act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from modelyard import metrics

Manifest = dict[str, Any]

#: apiVersion/kind → plural, for every kind the operator reads or writes.
PLURALS: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("v1", "Event"): "events",
    ("v1", "Secret"): "secrets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobjects",
    ("modelyard.dev/v1alpha1", "Model"): "models",
    ("modelyard.dev/v1alpha1", "ModelTemplate"): "modeltemplates",
    ("modelyard.dev/v1alpha1", "ModelVersion"): "modelversions",
    ("modelyard.dev/v1alpha1", "Registry"): "registries",
}

#: API calls in flight at once: the HTTP connection pool and the worker threads are sized to it.
CONCURRENCY = 32

TEMPORARY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class ApiError(Exception):
    """A failed API call, classified once for every caller."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def temporary(self) -> bool:
        return self.status in TEMPORARY_STATUSES or self.status == 0

    @property
    def not_found(self) -> bool:
        return self.status == 404


def path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    plural = PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{prefix}{scope}/{plural}" + (f"/{name}" if name else "")


class Priority:
    """Which API calls go first when many wait: what users wait for before what they read."""

    DEPLOYMENT = 0  # the workload itself: time-to-Deployment is what a user waits for
    CHILD = 1  # Services, autoscalers, pull Secrets
    STATUS = 2  # status and finalizers
    EVENT = 3  # best effort
    READ = 1


class PriorityGate:
    """At most `limit` calls in flight; waiting calls are let in by priority, then by arrival.

    A burst of new Models otherwise queues every Model's Deployment behind the Services,
    autoscalers and status writes of the Models that came before it.
    """

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = 0

    async def __call__(self, priority: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        self._arrivals += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, self._arrivals, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted, then cancelled before running: pass the slot on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


@dataclass
class _Cached:
    value: bool
    until: float


class Kube:
    """Server-side apply, status patches, deletes, events and discovery — nothing else."""

    def __init__(
        self, api_client: kubernetes.client.ApiClient, field_manager: str, timeout: float = 30
    ):
        self._client = api_client
        self.field_manager = field_manager
        self._timeout = timeout
        self._discovery: dict[str, _Cached] = {}
        self._gate = PriorityGate(CONCURRENCY)
        self.requests = 0
        self.writes = 0

    @classmethod
    def from_environment(cls, field_manager: str) -> Kube:
        """In-cluster service account, or the kubeconfig in $KUBECONFIG / ~/.kube/config."""
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        configuration = kubernetes.client.Configuration.get_default_copy()
        # One reconcile makes several calls and many run at once: the default pool (5 per
        # core) makes them queue for a connection.
        configuration.connection_pool_maxsize = CONCURRENCY
        return cls(kubernetes.client.ApiClient(configuration), field_manager)

    def _call(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Manifest:
        self.requests += 1
        if method != "GET":
            self.writes += 1
        metrics.API_REQUESTS.labels(method).inc()
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            prepared = self._client.param_serialize(
                method=method,
                resource_path=url,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(*prepared, _request_timeout=self._timeout)
            data = response.read()  # type: ignore[no-untyped-call]
        except ApiException as error:
            raise _problem(error.status, error.reason, error.body, error.headers) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ApiError(0, "Unreachable", str(error)) from None
        if not 200 <= response.status < 300:
            headers = response.getheaders()  # type: ignore[no-untyped-call]
            raise _problem(response.status, response.reason, data, headers)
        parsed: Manifest = json.loads(data) if data else {}
        return parsed

    async def _run(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        *,
        priority: int = Priority.READ,
    ) -> Manifest:
        await self._gate(priority)
        try:
            return await asyncio.to_thread(self._call, method, url, body, query, content_type)
        finally:
            self._gate.release()

    async def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply under the operator's field manager; the manifest is the whole intent.

        `force` takes fields over from hand edits (`kubectl edit`), which is what restores drift;
        fields the manifest does not mention (the HPA's replicas, injected sidecars) stay with
        their owners.
        """
        metadata = manifest["metadata"]
        url = path(
            manifest["apiVersion"], manifest["kind"], metadata.get("namespace"), metadata["name"]
        )
        query = [("fieldManager", self.field_manager), ("force", "true")]
        # JSON is YAML, and a string body passes through the client untouched.
        priority = Priority.DEPLOYMENT if manifest["kind"] == "Deployment" else Priority.CHILD
        return await self._run(
            "PATCH",
            url,
            json.dumps(manifest),
            query,
            "application/apply-patch+yaml",
            priority=priority,
        )

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete if present; False when it was already gone."""
        try:
            await self._run(
                "DELETE",
                path(api_version, kind, namespace, name),
                {"propagationPolicy": "Background"},
            )
        except ApiError as problem:
            if problem.not_found:
                return False
            raise
        return True

    async def patch_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: Manifest
    ) -> Manifest:
        """Replace status through the status subresource, the only place it may be written."""
        url = path(api_version, kind, namespace, name) + "/status"
        return await self._run(
            "PATCH",
            url,
            {"status": status},
            None,
            "application/merge-patch+json",
            priority=Priority.STATUS,
        )

    async def set_finalizers(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        finalizers: list[str],
        resource_version: str | None,
    ) -> Manifest:
        """Replace the finalizer list, only if nobody changed the object since we read it (409)."""
        metadata: Manifest = {"finalizers": finalizers}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        url = path(api_version, kind, namespace, name)
        return await self._run(
            "PATCH",
            url,
            {"metadata": metadata},
            None,
            "application/merge-patch+json",
            priority=Priority.STATUS,
        )

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Manifest | None:
        try:
            return await self._run("GET", path(api_version, kind, namespace, name))
        except ApiError as problem:
            if problem.not_found:
                return None
            raise

    async def post_event(
        self, involved: Manifest, event_type: str, reason: str, message: str, component: str
    ) -> None:
        """A core/v1 Event on `involved`; Events are best effort and never fail a reconcile."""
        metadata = involved["metadata"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        name = f"{metadata['name']}.{time.time_ns():x}{random.randrange(16**4):04x}"
        namespace = metadata.get("namespace") or "default"
        event: Manifest = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": metadata["name"],
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        # Best effort: losing an Event must never fail or retry a reconcile.
        with contextlib.suppress(ApiError):
            url = path("v1", "Event", namespace)
            await self._run("POST", url, event, None, priority=Priority.EVENT)

    async def serves(self, group_version: str, plural: str, ttl: float = 60) -> bool:
        """Whether the API serves a resource (is KEDA installed?), cached for `ttl` seconds."""
        key = f"{group_version}/{plural}"
        cached = self._discovery.get(key)
        if cached and cached.until > time.monotonic():
            return cached.value
        try:
            listing = await self._run("GET", f"/apis/{group_version}")
            value = any(r.get("name") == plural for r in listing.get("resources", []))
        except ApiError as problem:
            if not problem.temporary:
                value = False  # 404: the group/version is not served at all
            elif cached is not None:
                return cached.value
            else:
                raise
        self._discovery[key] = _Cached(value, time.monotonic() + ttl)
        return value


def _problem(status: Any, reason: Any, body: Any, headers: Any) -> ApiError:
    """Kubernetes `Status` bodies carry the reason and message worth showing."""
    reason, message = str(reason or ""), ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        payload = json.loads(body or "{}")
        reason = payload.get("reason") or reason
        message = payload.get("message") or ""
    except (TypeError, ValueError):
        message = str(body or "")[:500]
    retry_after = None
    value = (headers or {}).get("Retry-After")
    if value:
        try:
            retry_after = float(value)
        except ValueError:
            retry_after = None
    return ApiError(int(status or 0), reason, message, retry_after)
