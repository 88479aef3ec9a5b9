"""The one client of the Kubernetes API: asynchronous, on the operator's own event loop.

One `Kube` per process: building an API client per call doubles reaction time (docs/design.md).
Calls use explicit paths, so any kind — ours, KEDA's, built-in — is reached the same way without
per-kind client classes or discovery round-trips. They run on kopf's event loop through aiohttp
(already there for kopf): the official synchronous client needed a worker thread per call in
flight, and under a burst of Models 40% of the operator's CPU went to that client and to the
threads contending for the interpreter (docs/performance.md).

Every failure leaves this module as an `ApiError` that says whether retrying can help
(409, 429, 5xx, timeouts) or not (422 invalid, 403 forbidden, 404 on a write): the one error
taxonomy the reconcilers act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import math
import os
import random
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

from modelyard import metrics
from modelyard.kube import http2

Manifest = dict[str, Any]
logger = logging.getLogger(__name__)

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
    ("coordination.k8s.io/v1", "Lease"): "leases",
}

#: API calls in flight at once: the connection pool is sized to it.
CONCURRENCY = 32

TEMPORARY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
#: Asks the API server for an object's metadata alone.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


class NotLeading(Exception):  # noqa: N818 -- a state, not a failure
    """A write asked for by a process that does not hold the leader Lease (any more).

    Raised before anything is sent: a standby, or a leader that just lost its Lease, must not
    write, or two processes would fight over the same objects. Not an `ApiError`, so no
    reconciler mistakes it for the server's refusal and reports it in a status.
    """


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


@dataclass(frozen=True)
class Credentials:
    """Where the API is and who we are there (`modelyard.kube.login` finds them)."""

    server: str
    token: str | None = None
    #: Another Authorization header than a bearer token (basic auth), whole.
    authorization: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    certificate_path: str | None = None
    certificate_data: bytes | None = None
    private_key_path: str | None = None
    private_key_data: bytes | None = None
    insecure: bool = False
    #: When to log in again (time.monotonic()), for a rotated token file or an expiring token.
    expires: float | None = field(default=None, compare=False)

    def tls_identity(self) -> tuple[Any, ...]:
        """What a connection pool is bound to; a new token alone does not change it."""
        return (
            self.server,
            self.ca_path,
            self.ca_data,
            self.certificate_path,
            self.certificate_data,
            self.private_key_path,
            self.private_key_data,
            self.insecure,
        )

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.authorization:
            return {"Authorization": self.authorization}
        return {}

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(
            cafile=self.ca_path, cadata=self.ca_data.decode() if self.ca_data else None
        )
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certificate_path or self.certificate_data:
            with _as_files(
                (self.certificate_path, self.certificate_data),
                (self.private_key_path, self.private_key_data),
            ) as (certificate, key):
                context.load_cert_chain(certificate, key)
        return context

    def __repr__(self) -> str:  # never a token or a key in a log line
        return f"Credentials(server={self.server!r})"


@contextlib.contextmanager
def _as_files(*items: tuple[str | None, bytes | None]) -> Any:
    """ssl loads client certificates from files only; inline kubeconfig data is written to
    private temporary files for the moment it takes."""
    paths: list[str | None] = []
    created: list[str] = []
    try:
        for given, data in items:
            if given or data is None:
                paths.append(given)
                continue
            handle, name = tempfile.mkstemp(prefix="modelyard-")
            created.append(name)
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            paths.append(name)
        yield paths
    finally:
        for name in created:
            with contextlib.suppress(OSError):
                os.unlink(name)


class Priority:
    """Which API calls go first when many wait.

    Writes share one rank, first come first served: which Model's work goes first is decided
    before, by the runner's turns (a new Model's Deployment first). Ranking Deployments above
    Services here held every Service back until a burst's last Deployment, and Services are
    what the API server is slowest to create (one at a time, under its ClusterIP allocator's
    lock): a burst took half as long again as the same writes from a plain client."""

    LEASE = -1  # leadership: a renewal stuck behind a burst would lose the Lease
    WRITE = 0  # children, status, finalizers
    READ = 0
    EVENT = 1  # best effort


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
    """Server-side apply, status patches, deletes, events, discovery and watches — nothing else.

    `login` is called for the first request and again after a 401 (a rotated service-account
    token, an expired exec-plugin token), so credentials are never cached past their use.
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
        self._login = login
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
        self._credentials: Credentials | None = None
        self._login_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        #: Watches' own connections: a watch holds its connection for as long as it runs, so
        #: watches must never take the connections calls are made on (see `_connect`).
        self._watch_session: aiohttp.ClientSession | None = None
        #: Watches as HTTP/2 streams, many to a connection (`modelyard.kube.http2`), where the
        #: server speaks it; `_watch_session` where it does not.
        self._streams: http2.Pool | None = None
        #: A connection silent this long is sent a PING, and closed without an answer in
        #: `ping_timeout` (client-go: 30 s and 15 s).
        self.ping_after = ping_after
        self.ping_timeout = ping_timeout
        self._discovery: dict[str, _Cached] = {}
        self._gate = PriorityGate(CONCURRENCY)
        self.requests = 0
        self.writes = 0

    async def _connect(
        self, renew: bool = False, watching: bool = False
    ) -> tuple[aiohttp.ClientSession, Credentials]:
        """The session and current credentials; logs in again when asked (after a 401) or when
        the credentials say they expire. The connection pools are kept unless TLS material
        changed: a rotated token only changes a header.

        Calls and watches have pools apart. Calls share a bounded pool (at most CONCURRENCY
        in flight, let in by the gate). Each watch holds a connection of its own for as long as
        it runs — ten kinds in each watched namespace — and were they drawn from the calls' pool,
        a few namespaces would fill it with watches and leave every call waiting for a
        connection that never frees (an operator never ready). HTTP/1.1 has no way to share a
        connection between streams, so the watches' pool grows with the watches."""
        credentials = self._credentials
        expired = credentials is not None and (credentials.expires or float("inf")) < (
            time.monotonic()
        )
        if renew or expired or credentials is None:
            # One login at a time: a burst of calls that all meet a 401 (or an expired token)
            # must not run an exec plugin once each.
            async with self._login_lock:
                if self._credentials is credentials:  # nobody renewed them while we waited
                    fresh = await self._relogin(credentials)
                    stale = (
                        credentials is None or credentials.tls_identity() != fresh.tls_identity()
                    )
                    # The new credentials first: a call that comes in while the old pools
                    # close builds new ones with these, never with the old TLS material.
                    self._credentials = fresh
                    if stale:
                        await self._close_sessions()
                credentials = self._credentials
                assert credentials is not None
        if self._session is None or self._watch_session is None:
            try:
                context = credentials.ssl_context()
                # A context of its own for the streams: it offers h2 by ALPN, which
                # aiohttp's must not.
                streams_context = credentials.ssl_context()
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
                raise ApiError(0, "LoginFailed", f"unusable TLS material: {error}") from None
            base = credentials.server.rstrip("/")
            if self._session is None:
                # Calls in flight are bounded by the gate, and so is the pool: each TLS
                # connection holds 256 KB of buffers. A few more than the gate lets in, for
                # the election's calls, which skip the queue.
                self._session = aiohttp.ClientSession(
                    base_url=base,
                    connector=aiohttp.TCPConnector(limit=CONCURRENCY + 8, ssl=context),
                )
            if self._watch_session is None:
                self._watch_session = aiohttp.ClientSession(
                    base_url=base, connector=aiohttp.TCPConnector(limit=0, ssl=context)
                )
                self._streams = http2.Pool(
                    base,
                    streams_context,
                    connect_timeout=self._timeout,
                    ping_after=self.ping_after,
                    ping_timeout=self.ping_timeout,
                )
        return (self._watch_session if watching else self._session), credentials

    async def _close_sessions(self) -> None:
        # Detached before anything is awaited: whatever comes in meanwhile makes new ones.
        sessions, streams = (self._session, self._watch_session), self._streams
        self._session = self._watch_session = self._streams = None
        for session in sessions:
            if session is not None:
                await session.close()
        if streams is not None:
            await streams.close()

    def watch_connections(self) -> tuple[str, int]:
        """How watches travel now, and on how many HTTP/2 connections ("HTTP/1.1", 0: each
        watch on a connection of its own)."""
        streams = self._streams
        if streams is not None and not streams.unavailable:
            return "HTTP/2", len([c for c in streams.connections if c.failure is None])
        return "HTTP/1.1", 0

    async def _relogin(self, previous: Credentials | None) -> Credentials:
        """Credentials from the login; a failure after the first login (a rotated token file
        gone, an exec plugin failing) is a temporary `ApiError`, so every caller — a pass, an
        informer, the election — retries it as it retries an unreachable server. The first
        login's failure is the caller's to report (`modelyard run` says it in one line)."""
        if previous is None:
            return await asyncio.to_thread(self._login)
        try:
            return await asyncio.to_thread(self._login)
        except Exception as error:  # any failure of a login plugin
            raise ApiError(0, "LoginFailed", f"logging in again failed: {error}") from None

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
        await self._close_sessions()

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
                            raise _problem(
                                response.status, response.reason, payload, response.headers
                            )
                        return _json(payload, response.status)
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

        Lines are split here rather than by aiohttp's readline, whose 64 KiB limit a large
        object (a pod with a long status) can exceed.
        """
        self.requests += 1
        metrics.API_REQUESTS.labels("WATCH").inc()
        for attempt in (1, 2):
            session, credentials = await self._connect(renew=attempt == 2, watching=True)
            streams = self._streams
            if streams is not None and not streams.unavailable:
                try:
                    async for event in self._watch_stream(streams, url, query, credentials, idle):
                        yield event
                    return
                except _Unauthorized:
                    if attempt == 1:
                        continue
                    refused = "the API server refused the credentials"
                    raise ApiError(401, "Unauthorized", refused) from None
                except http2.Unavailable:
                    logger.info(
                        "%s does not speak HTTP/2: each watch takes a connection of its own",
                        streams.authority,
                    )
            try:
                async with session.get(
                    url,
                    params={**query, "watch": "true"},
                    headers={
                        "Accept": "application/json",
                        "User-Agent": self.user_agent,
                        **credentials.headers(),
                    },
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=self._timeout, sock_read=idle
                    ),
                ) as response:
                    if response.status == 401 and attempt == 1:
                        continue
                    if response.status != 200:
                        payload = await response.read()
                        raise _problem(response.status, response.reason, payload, response.headers)
                    buffer = b""
                    async for chunk in response.content.iter_any():
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        for line in lines:
                            if line.strip():
                                yield _json(line, response.status)
                    return
            except TimeoutError as error:
                if isinstance(error, aiohttp.ConnectionTimeoutError):
                    raise ApiError(0, "Unreachable", "timed out connecting") from None
                raise ApiError(0, "Silent", f"nothing came for {idle} s") from None
            except aiohttp.ClientError as error:
                raise ApiError(0, "Unreachable", str(error) or type(error).__name__) from None

    async def _watch_stream(
        self,
        streams: http2.Pool,
        url: str,
        query: dict[str, str],
        credentials: Credentials,
        idle: float | None,
    ) -> AsyncIterator[Manifest]:
        """One watch as an HTTP/2 stream; `_Unauthorized` on a 401 (the caller logs in again)."""
        target = f"{url}?{urlencode({**query, 'watch': 'true'})}"
        headers = {
            "accept": "application/json",
            "user-agent": self.user_agent,
            **{name.lower(): value for name, value in credentials.headers().items()},
        }
        try:
            stream = await streams.stream(target, headers)
        except http2.StreamError as error:
            raise ApiError(0, "Unreachable", str(error)) from None
        try:
            try:
                await asyncio.wait_for(stream.answered(), self._timeout)
            except TimeoutError:
                raise ApiError(0, "Unreachable", "no answer to the watch") from None
            if stream.status == 401:
                raise _Unauthorized
            if stream.status != 200:
                try:
                    payload = await asyncio.wait_for(stream.read(), self._timeout)
                except TimeoutError:
                    payload = b""
                raise _problem(stream.status, "", payload, stream.headers)
            buffer = b""
            async for chunk in stream.body(idle):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _json(line, stream.status)
        except TimeoutError:
            raise ApiError(0, "Silent", f"nothing came for {idle} s") from None
        except http2.GoingAway as error:
            if stream.status == 200:
                return  # the server drains the connection: the caller resumes, on another
            raise ApiError(0, "Unreachable", str(error)) from None
        except http2.StreamError as error:
            raise ApiError(0, "Unreachable", str(error)) from None
        finally:
            stream.close()

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


class _Unauthorized(Exception):  # noqa: N818 -- a signal between two methods
    """A watch stream answered 401: log in again, once."""


def _json(payload: bytes, status: int) -> Manifest:
    """A successful answer's body; one that is not a JSON object (a proxy's error page, a
    truncated stream) is a temporary failure like an unreachable server, not a crash."""
    if not payload:
        return {}
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        shown = payload[:120].decode("utf-8", "replace")
        raise ApiError(0, "InvalidResponse", f"{status} with a body that is not JSON: {shown!r}")
    return parsed


def _problem(status: Any, reason: Any, body: Any, headers: Any) -> ApiError:
    """Kubernetes `Status` bodies carry the reason and message worth showing."""
    reason, message = str(reason or ""), ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        payload = json.loads(body or "{}")
        reason = payload.get("reason") or reason
        message = payload.get("message") or ""
    except (TypeError, ValueError, AttributeError):
        message = str(body or "")[:500]
    retry_after = None
    # HTTP/2 header names are lowercase; aiohttp's lookup ignores case, a dict does not.
    value = next(
        (v for k, v in dict(headers or {}).items() if str(k).lower() == "retry-after"), None
    )
    if value:
        try:
            retry_after = float(value)
        except ValueError:
            retry_after = None
    return ApiError(int(status or 0), reason, message, retry_after)
