"""The client's connections to the API server, and the credentials they are made with.

Calls and watches have pools apart. Calls share a bounded pool (the client lets at most
`CONCURRENCY` in flight). A watch holds its connection for as long as it runs — ten kinds in each
watched namespace — and were they drawn from the calls' pool, a few namespaces would fill it with
watches and leave every call waiting for a connection that never frees (an operator never
ready). Over HTTP/2 watches share a few connections of their own (`streams`); over HTTP/1.1,
which cannot share a connection between streams, each takes one, so the watches' pool grows with
the watches.

Logging in again is here too, because it decides whether the pools survive: they are kept
unless the TLS material changed, since a rotated token only changes a header.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from modelyard.kube import http2
from modelyard.kube.errors import ApiError
from modelyard.kube.login import Credentials

#: API calls in flight at once: the client's gate lets in no more, and the pool is sized to it.
CONCURRENCY = 32


class Pools:
    """The sessions of one client, made on first use and again after new TLS material."""

    def __init__(
        self,
        login: Callable[[], Credentials],
        *,
        connect_timeout: float,
        ping_after: float,
        ping_timeout: float,
    ) -> None:
        self._login = login
        self._connect_timeout = connect_timeout
        #: A connection silent this long is sent a PING, and closed without an answer in
        #: `ping_timeout` (client-go: 30 s and 15 s).
        self._ping_after = ping_after
        self._ping_timeout = ping_timeout
        self._credentials: Credentials | None = None
        self._login_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        #: Watches' own connections, where the server does not speak HTTP/2.
        self._watch_session: aiohttp.ClientSession | None = None
        #: Watches as HTTP/2 streams, many to a connection (`modelyard.kube.http2`), where the
        #: server speaks it; `_watch_session` where it does not.
        self.streams: http2.Pool | None = None

    async def connect(
        self, renew: bool = False, watching: bool = False
    ) -> tuple[aiohttp.ClientSession, Credentials]:
        """The session (the watches' with `watching`) and current credentials; logs in again
        when asked (after a 401) or when the credentials say they expire."""
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
                        await self.close()
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
                self.streams = http2.Pool(
                    base,
                    streams_context,
                    connect_timeout=self._connect_timeout,
                    ping_after=self._ping_after,
                    ping_timeout=self._ping_timeout,
                )
        return (self._watch_session if watching else self._session), credentials

    async def close(self) -> None:
        # Detached before anything is awaited: whatever comes in meanwhile makes new ones.
        sessions, streams = (self._session, self._watch_session), self.streams
        self._session = self._watch_session = self.streams = None
        for session in sessions:
            if session is not None:
                await session.close()
        if streams is not None:
            await streams.close()

    def watch_connections(self) -> tuple[str, int]:
        """How watches travel now, and on how many HTTP/2 connections ("HTTP/1.1", 0: each
        watch on a connection of its own)."""
        streams = self.streams
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
