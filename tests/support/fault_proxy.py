"""A small HTTP proxy between the operator and the real API server, for faults on demand.

A real API server does not answer 500, 429 with Retry-After or slowly when a test wants it to,
nor drop its watches or compact its history on cue. This proxy does, and otherwise forwards every
request unchanged — the operator's own credentials included, so the server still authenticates
and authorises each call under the chart's RBAC. It also records every request (method, path,
status), which is how tests count the operator's writes and prove it idle.

It runs on its own thread and event loop, so tests may block on their synchronous API client
without stalling the operator's traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web

#: Request headers passed upstream. Accept-Encoding is not: the proxy reads bodies decoded.
FORWARDED_REQUEST_HEADERS = ("Authorization", "Content-Type", "Accept", "User-Agent")
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Retry-After", "Warning", "Audit-Id")


@dataclass
class Fault:
    """Answer matching requests with `code` (0: forward after the delay), `times` times, once
    `after` matching requests have gone through untouched. `body`: answer these bytes as they
    are (a proxy's error page with a 200). A watch answered 410 gets what a real server sends
    after a compaction: a 200 whose one event is an ERROR with code 410."""

    method: str
    path: re.Pattern[str]
    code: int = 500
    times: int | None = 1
    retry_after: int | None = None
    delay: float = 0.0
    after: int = 0
    body: bytes | None = None
    hits: int = 0
    passed: int = 0


class WatchStream(aiohttp.web.StreamResponse):
    """A watch being relayed; recorded when it starts, since it may last for the whole test."""


class ClientGone(Exception):  # noqa: N818 -- a condition, not an error of ours
    """The client closed its connection while the proxy held its request."""


@dataclass(frozen=True)
class Served:
    """One request the operator made, as the proxy saw it."""

    method: str
    path: str  # with "?watch" appended for watch requests
    status: int
    query: dict[str, str] = field(default_factory=dict, compare=False)
    # The server's own words when it refused (a Status message), to tell an RBAC denial from,
    # say, a namespace being terminated: both answer 403.
    message: str = field(default="", compare=False)

    def __iter__(self) -> Any:  # (method, path, status), as tests unpack it
        return iter((self.method, self.path, self.status))


REFUSAL = aiohttp.web.ResponseKey("refusal", str)


def _message_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FaultProxy:
    def __init__(self, upstream: str, ca_file: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.ca_file = ca_file
        self.faults: list[Fault] = []
        self.served: list[Served] = []
        #: Writes forwarded whose answers are not yet logged in `served`: the server may have
        #: stored one (and a test read it back) before the proxy logs it.
        self._writes_in_flight = 0
        #: Watches asking to resume from before this revision get 410 Gone, as after compaction.
        self.compacted_before = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")
        self._watches: set[aiohttp.ClientResponse] = set()
        #: Watches being relayed, by the path they asked for (see `stall_watches`).
        self._relaying: dict[aiohttp.ClientResponse, str] = {}
        #: Relayed watches that pass nothing on any more, their sockets left open.
        self._stalled: set[aiohttp.ClientResponse] = set()
        #: Watches whose next chunk is cut in half and their connection reset.
        self._cut: set[aiohttp.ClientResponse] = set()
        #: Seconds between single bytes of a watch (0: relayed as it comes).
        self.drip = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._runner: aiohttp.web.AppRunner | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self.url = self._call(self._start())
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _start(self) -> str:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=True,
        )
        app = aiohttp.web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        await self._drop()
        # Requests still held (a stalled watch whose client never gave up, a delay) end here,
        # not as tasks destroyed pending when the loop stops.
        held = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- what tests call ----------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        code: int = 500,
        *,
        times: int | None = 1,
        retry_after: int | None = None,
        delay: float = 0.0,
        after: int = 0,
        body: bytes | None = None,
    ) -> Fault:
        fault = Fault(
            method.upper(), re.compile(path), code, times, retry_after, delay, after, body
        )
        self.faults.append(fault)
        return fault

    def stall_watches(self, path: str = "") -> int:
        """The watches open now whose path matches stop passing anything on, while their
        sockets stay open: what a client sees of a half-open connection, an API server
        instance gone, or a load balancer that dropped its backend. New requests go through,
        as to another instance. How many were stalled."""
        pattern = re.compile(path)
        stalled = [w for w, asked in list(self._relaying.items()) if pattern.search(asked)]
        self._stalled.update(stalled)
        return len(stalled)

    def stalled_watches_open(self) -> int:
        """Stalled watches whose client has not given up on them yet."""
        return len(self._stalled & set(self._relaying))

    def reset_watches(self, path: str = "") -> int:
        """The watches open now whose path matches are cut mid-event at their next chunk: half
        of it is sent, then the connection is reset. How many."""
        pattern = re.compile(path)
        cut = [w for w, asked in list(self._relaying.items()) if pattern.search(asked)]
        self._cut.update(cut)
        return len(cut)

    def writes(self) -> list[Served]:
        return [entry for entry in list(self.served) if entry.method != "GET"]

    def writes_logged(self) -> bool:
        """Whether every write forwarded so far has its answer logged."""
        return self._writes_in_flight == 0

    async def drop_watches(self) -> None:
        """Close every open watch stream, as an apiserver restart or a load balancer would."""
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._drop(), self._loop))

    async def expire_history(self, revision: int) -> None:
        """Refuse to resume watches from before `revision` (410 Gone) and close the open ones:
        clients must list again, as after an etcd compaction."""
        self.compacted_before = revision
        await self.drop_watches()

    async def _drop(self) -> None:
        for upstream in list(self._watches):
            upstream.close()
        self._watches.clear()

    # -- serving ------------------------------------------------------------------------------

    def _fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.method not in (method, "*") or not fault.path.search(path):
                continue
            if fault.passed < fault.after:
                fault.passed += 1
                return None
            if fault.times is None or fault.hits < fault.times:
                fault.hits += 1
                return fault
        return None

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        method = request.method.upper()
        query = dict(request.query)
        watching = query.get("watch") in ("true", "1")
        logged = request.path + ("?watch" if watching else "")
        writing = method != "GET"
        self._writes_in_flight += writing
        try:
            try:
                response = await self._answer(request, method, logged, query, watching)
            except ClientGone:
                # The operator died (SIGKILL) while its request was held: nothing reaches the
                # server, as nothing would through a connection that is gone.
                return aiohttp.web.Response(status=499)
            if not isinstance(response, WatchStream):  # a watch was recorded when it started
                message = response.get(REFUSAL, "")
                self.served.append(Served(method, logged, response.status, query, message))
        finally:
            # Only once logged: a test reading the log never misses a write already stored.
            self._writes_in_flight -= writing
        return response

    async def _answer(
        self,
        request: aiohttp.web.Request,
        method: str,
        logged: str,
        query: dict[str, str],
        watching: bool,
    ) -> aiohttp.web.StreamResponse:
        fault = self._fault(method, logged)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
                if request.transport is None or request.transport.is_closing():
                    raise ClientGone
            if fault.body is not None:
                return aiohttp.web.Response(status=fault.code or 200, body=fault.body)
            if fault.code == 410 and watching:
                return _gone()
            if fault.code:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
                return aiohttp.web.json_response(
                    _status(fault.code, "Injected", f"injected {fault.code}"),
                    status=fault.code,
                    headers=headers,
                )
        since = query.get("resourceVersion") or "0"
        if watching and since.isdigit() and 0 < int(since) < self.compacted_before:
            return _gone()
        assert self._session is not None
        headers = {k: request.headers[k] for k in FORWARDED_REQUEST_HEADERS if k in request.headers}
        body = await request.read()
        upstream = await self._session.request(
            method,
            self.upstream + request.rel_url.path_qs,
            data=body or None,
            headers=headers,
        )
        reply_headers = {
            k: upstream.headers[k] for k in FORWARDED_RESPONSE_HEADERS if k in upstream.headers
        }
        if not watching or upstream.status != 200:
            try:
                data = await upstream.read()
            finally:
                upstream.release()
            response = aiohttp.web.Response(
                status=upstream.status, body=data, headers=reply_headers
            )
            if upstream.status >= 400:
                response[REFUSAL] = _message_of(data)
            return response
        stream = WatchStream(status=200, headers=reply_headers)
        await stream.prepare(request)
        self.served.append(Served(method, logged, 200, query))
        await self._relay(request, stream, upstream, logged)
        return stream

    async def _relay(
        self,
        request: aiohttp.web.Request,
        stream: WatchStream,
        upstream: aiohttp.ClientResponse,
        logged: str,
    ) -> None:
        """A watch's bytes to the client, as they come — or not, or cut, or in drips."""
        self._watches.add(upstream)
        self._relaying[upstream] = logged
        try:
            async for chunk in upstream.content.iter_any():
                if upstream in self._stalled:
                    # Nothing more reaches the client, which must notice by itself; the
                    # stream ends once the client gives up on it (or the proxy stops).
                    await _until_gone(request)
                    break
                if upstream in self._cut and request.transport is not None:
                    await stream.write(chunk[: max(1, len(chunk) // 2)])
                    request.transport.abort()
                    break
                if self.drip:
                    for index in range(len(chunk)):
                        await stream.write(chunk[index : index + 1])
                        await asyncio.sleep(self.drip)
                else:
                    await stream.write(chunk)
        except (aiohttp.ClientError, ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watches.discard(upstream)
            self._relaying.pop(upstream, None)
            self._stalled.discard(upstream)
            self._cut.discard(upstream)
            upstream.close()
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await stream.write_eof()


async def _until_gone(request: aiohttp.web.Request) -> None:
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.1)


def _gone() -> aiohttp.web.Response:
    """What a real server answers a watch asking to resume from before an etcd compaction."""
    gone = {"type": "ERROR", "object": _status(410, "Expired", "too old resource version")}
    return aiohttp.web.Response(
        status=200, body=json.dumps(gone).encode() + b"\n", content_type="application/json"
    )
