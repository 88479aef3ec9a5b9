"""The one client of the Kubernetes API: asynchronous, on the operator's own event loop.

One `Kube` per process: building an API client per call doubled reaction time (docs/design.md).
Calls go through aiohttp on the event loop the operator already runs: the official synchronous
client needed a worker thread per call in flight, and under a burst of Models most of the
operator's CPU went to that client, to HTTP, and to its threads (docs/performance.md).

What this module answers for is how a call is made: the request, its one retry with new
credentials after a 401, its turn among the calls waiting, and the write guard — no write leaves
a process that may not write (`write_allowance`). The pieces around it have modules of their
own: the connections and logging in again (`pools`), which path a kind is at (`paths`), how a
failure is classified (`errors`), the order of the waiting (`gate`), where credentials come
from (`login`) and how a watch's stream is read (`watch`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelyard import metrics
from modelyard.kube import http2
from modelyard.kube.errors import ApiError, NotLeading, api_error, json_body
from modelyard.kube.gate import Priority, PriorityGate
from modelyard.kube.login import Credentials
from modelyard.kube.paths import path
from modelyard.kube.pools import CONCURRENCY, Pools
from modelyard.kube.watch import Unauthorized, events_over_http1, events_over_http2

Manifest = dict[str, Any]
logger = logging.getLogger(__name__)

#: Asks the API server for an object's metadata alone.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


@dataclass
class _Cached:
    value: bool
    until: float


class Kube:
    """Server-side apply, status and finalizer patches, deletes, reads, the leader Lease,
    events, discovery and watches — nothing else.

    `login` is called for the first request, again after a 401 (a rotated service-account
    token, an expired exec-plugin token) and when the credentials it gave say they expire: a
    credential is used until the server refuses it or it runs out, never past that.
    """

    def __init__(
        self,
        login: Callable[[], Credentials],
        field_manager: str,
        timeout: float = 30,
        user_agent: str = "modelyard",
        *,
        ping_after: float = 30.0,
        ping_timeout: float = 15.0,
    ) -> None:
        #: Sent with every request: the API server's audit log tells the operator's processes
        #: (replicas of one Deployment share a service account) apart by it.
        self.user_agent = user_agent
        #: For how many more seconds this process may write (0: it may not): asked before a
        #: write waits for its turn, again when its turn comes and before a retry after a new
        #: login, and it bounds how long the write may take (see `modelyard.kube.lease`). The
        #: leader election's own requests are exempt.
        self.write_allowance: Callable[[], float] = lambda: math.inf
        self.field_manager = field_manager
        self._timeout = timeout
        #: A connection silent for `ping_after` s is sent a PING, and closed without an answer
        #: in `ping_timeout` (client-go: 30 s and 15 s).
        self._pools = Pools(
            login, connect_timeout=timeout, ping_after=ping_after, ping_timeout=ping_timeout
        )
        self._discovery: dict[str, _Cached] = {}
        self._gate = PriorityGate(CONCURRENCY)
        self.requests = 0
        self.writes = 0

    async def _connect(
        self, renew: bool = False, watching: bool = False
    ) -> tuple[aiohttp.ClientSession, Credentials]:
        """The session for a call (or with `watching`, a watch) and current credentials,
        logging in again when asked (after a 401) or when they expire (`Pools.connect`)."""
        return await self._pools.connect(renew=renew, watching=watching)

    def watch_connections(self) -> tuple[str, int]:
        """How watches travel now, and on how many HTTP/2 connections ("HTTP/1.1", 0: each
        watch on a connection of its own)."""
        return self._pools.watch_connections()

    def _write_time(self, method: str, url: str, electing: bool) -> float:
        """How long this request may take: the client's timeout, and for a write no longer
        than this process may still write; NotLeading when it may not at all."""
        if method == "GET" or electing:
            return self._timeout
        allowance = self.write_allowance()
        if allowance <= 0:
            raise NotLeading(f"{method} {url}")
        return min(self._timeout, allowance)

    async def server(self) -> str:
        """The API server's URL, as the credentials name it (logging in if not yet done)."""
        _, credentials = await self._connect()
        return credentials.server

    async def close(self) -> None:
        await self._pools.close()

    async def _call(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        *,
        priority: int = Priority.READ,
        electing: bool = False,
        accept: str = "application/json",
    ) -> Manifest:
        self._write_time(method, url, electing)  # a standby's write waits for nothing
        self.requests += 1
        if method != "GET":
            self.writes += 1
        metrics.API_REQUESTS.labels(method).inc()
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body)
        headers = {
            "Accept": accept,
            "Content-Type": content_type,
            "User-Agent": self.user_agent,
        }
        # The election's own calls skip the gate: a renewal waiting behind 32 slow calls would
        # miss its deadline and stand a healthy leader down. (The pool has room for them.)
        if not electing:
            await self._gate(priority)
        try:
            for attempt in (1, 2):
                session, credentials = await self._connect(renew=attempt == 2)
                # Asked again now: the turn (and a new login) may have taken long enough for
                # the Lease to move, and the write may not outlast this process's allowance.
                allowed = self._write_time(method, url, electing)
                try:
                    async with session.request(
                        method,
                        url,
                        data=data,
                        params=query,
                        headers={**headers, **credentials.headers()},
                        timeout=aiohttp.ClientTimeout(total=allowed),
                    ) as response:
                        payload = await response.read()
                        if response.status == 401 and attempt == 1:
                            continue  # new credentials, once
                        if not 200 <= response.status < 300:
                            raise api_error(
                                response.status, response.reason, payload, response.headers
                            )
                        return json_body(payload, response.status)
                except TimeoutError:
                    if allowed < self._timeout and self.write_allowance() <= 0:
                        # Cut short by the allowance, which has run out: the Lease may have
                        # moved, and this process may no longer write.
                        raise NotLeading(f"{method} {url} (the Lease may have moved)") from None
                    raise ApiError(0, "Unreachable", "timed out") from None
                except aiohttp.ClientError as error:
                    raise ApiError(0, "Unreachable", str(error) or type(error).__name__) from None
            raise AssertionError("unreachable")  # pragma: no cover - the loop always returns
        finally:
            if not electing:
                self._gate.release()

    async def apply(self, manifest: Manifest, field_manager: str | None = None) -> Manifest:
        """Server-side apply under the operator's field manager (or `field_manager`); the
        manifest is the whole intent.

        `force` takes fields over from hand edits (`kubectl edit`), which is what restores drift;
        fields the manifest does not mention (the HPA's replicas, injected sidecars) stay with
        their owners.
        """
        metadata = manifest["metadata"]
        url = path(
            manifest["apiVersion"], manifest["kind"], metadata.get("namespace"), metadata["name"]
        )
        query = {"fieldManager": field_manager or self.field_manager, "force": "true"}
        return await self._call(
            "PATCH",
            url,
            json.dumps(manifest).encode(),  # JSON is YAML
            query,
            "application/apply-patch+yaml",
            priority=Priority.WRITE,
        )

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete if present; False when it was already gone."""
        try:
            await self._call(
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
        return await self._call(
            "PATCH",
            url,
            {"status": status},
            None,
            "application/merge-patch+json",
            priority=Priority.WRITE,
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
        return await self._call(
            "PATCH",
            url,
            {"metadata": metadata},
            None,
            "application/merge-patch+json",
            priority=Priority.WRITE,
        )

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Manifest | None:
        try:
            return await self._call("GET", path(api_version, kind, namespace, name))
        except ApiError as problem:
            if problem.not_found:
                return None
            raise

    async def metadata(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Manifest | None:
        """An object's metadata only (PartialObjectMetadata): its labels without its data —
        what to ask of a Secret that may not be read."""
        try:
            return await self._call(
                "GET",
                path(api_version, kind, namespace, name),
                accept=METADATA_ONLY,
            )
        except ApiError as problem:
            if problem.not_found:
                return None
            raise

    async def elect(self, method: str, url: str, body: Manifest | None = None) -> Manifest:
        """A leader election request (the Lease): the one write a standby makes."""
        return await self._call(method, url, body, priority=Priority.LEASE, electing=True)

    async def list(self, url: str, query: dict[str, str]) -> Manifest:
        """One page of a list (`limit`/`continue` in `query`)."""
        return await self._call("GET", url, None, query)

    async def watch(
        self, url: str, query: dict[str, str], idle: float | None = None
    ) -> AsyncIterator[Manifest]:
        """A watch stream's events as they come, until the server ends it — or, with `idle`,
        until nothing at all came for that many seconds (a temporary `ApiError`): a silent
        connection raises nothing by itself.

        Over HTTP/2 where the server speaks it, many watches to a connection; else each on a
        connection of its own. A 401 logs in again, once.
        """
        self.requests += 1
        metrics.API_REQUESTS.labels("WATCH").inc()
        for attempt in (1, 2):
            session, credentials = await self._connect(renew=attempt == 2, watching=True)
            headers = {
                "Accept": "application/json",
                "User-Agent": self.user_agent,
                **credentials.headers(),
            }
            relogin = attempt == 1
            streams = self._pools.streams
            try:
                if streams is not None and not streams.unavailable:
                    try:
                        over_http2 = events_over_http2(
                            streams,
                            url,
                            query,
                            headers,
                            answer_timeout=self._timeout,
                            idle=idle,
                            relogin=relogin,
                        )
                        # Closed as soon as the caller stops, not when it is collected.
                        async with contextlib.aclosing(over_http2) as events:
                            async for event in events:
                                yield event
                        return
                    except http2.Unavailable:
                        logger.info(
                            "%s does not speak HTTP/2: each watch takes a connection of its own",
                            streams.authority,
                        )
                over_http1 = events_over_http1(
                    session,
                    url,
                    query,
                    headers,
                    connect_timeout=self._timeout,
                    idle=idle,
                    relogin=relogin,
                )
                async with contextlib.aclosing(over_http1) as events:
                    async for event in events:
                        yield event
                return
            except Unauthorized:
                continue  # new credentials, once

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
        with contextlib.suppress(ApiError, NotLeading):
            url = path("v1", "Event", namespace)
            await self._call("POST", url, event, None, priority=Priority.EVENT)

    async def serves(self, group_version: str, plural: str, ttl: float = 60) -> bool:
        """Whether the API serves a resource (is KEDA installed?), cached for `ttl` seconds."""
        key = f"{group_version}/{plural}"
        cached = self._discovery.get(key)
        if cached and cached.until > time.monotonic():
            return cached.value
        try:
            listing = await self._call("GET", f"/apis/{group_version}")
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


# Moved to modules of their own, and still importable from here.
__all__ = ["Kube", "Manifest"]
