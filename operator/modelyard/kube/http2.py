"""Watches multiplexed over HTTP/2, as client-go holds them: many streams on a few connections.

Over HTTP/1.1 each watch holds a TCP and TLS connection for its lifetime: ten kinds in each
watched namespace, 500 connections at 50 namespaces (about 340 KB of client memory each, and as
many on the API server). HTTP/2 carries them as streams of one connection, up to the server's
MAX_CONCURRENT_STREAMS (100 on a default kube-apiserver; this client leaves room and opens another
connection when one is full).

Written directly on the `h2` protocol library (a state machine, no I/O) rather than on httpx:
stock httpx/httpcore reads streams only when asked, so an idle watch holding the read starves
every other stream of the connection, queues streams past the local limit without opening
another connection, decodes only the first member of the gzip stream the API server writes per
flush (a watch silently stops), and fails every stream of a connection on one stream's read
timeout. Here one reader task per connection hands each stream its frames, a stream closed early
is reset (RST_STREAM), and liveness is checked as client-go does it: a connection that brought
nothing for `ping_after` seconds is sent a PING, and one that does not answer within
`ping_timeout` is closed — a half-open connection fails every stream on it at once, and each
watch resumes from its last resourceVersion on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

#: Streams left free on each connection for the server's own limits and our headroom.
HEADROOM = 10
#: What a stream may buffer before the server must wait for us (flow control), per stream and
#: for the whole connection: watch events are consumed as they come.
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 16 << 20


class Unavailable(Exception):  # noqa: N818 -- a fact about the server, not a failure of ours
    """The server does not speak HTTP/2 (plain http, or a proxy that offers only HTTP/1.1)."""


class StreamError(Exception):
    """A stream or its connection ended before the answer did; the message says how."""


class GoingAway(StreamError):  # noqa: N818 -- the server's word, not a failure
    """The server closes the connection gracefully (GOAWAY), or refused the stream before
    doing anything with it (REFUSED_STREAM): nothing was lost, ask again elsewhere."""


@dataclass
class _Stream:
    connection: _Connection
    stream_id: int
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    chunks: asyncio.Queue[bytes | Exception | None] = field(default_factory=asyncio.Queue)
    ended: bool = False

    def fail(self, problem: Exception) -> None:
        self.answered.set()
        self.chunks.put_nowait(problem)


class Stream:
    """One request's answer: its status and headers, then its body as it comes."""

    def __init__(self, inner: _Stream) -> None:
        self._inner = inner

    async def answered(self) -> None:
        """Until the status and headers came (or the stream failed: then the body raises)."""
        await self._inner.answered.wait()

    @property
    def status(self) -> int:
        return self._inner.status

    @property
    def headers(self) -> dict[str, str]:
        return self._inner.headers

    async def body(self, idle: float | None = None) -> AsyncIterator[bytes]:
        """The body's chunks until it ends; TimeoutError when nothing came for `idle` s."""
        while True:
            if idle is None:
                item = await self._inner.chunks.get()
            else:
                item = await asyncio.wait_for(self._inner.chunks.get(), idle)
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    async def read(self, limit: int = 1 << 20) -> bytes:
        parts: list[bytes] = []
        async for chunk in self.body():
            parts.append(chunk)
            if sum(map(len, parts)) > limit:
                break
        return b"".join(parts)

    def close(self) -> None:
        """Done with it: a stream still open is reset, so the server stops sending."""
        self._inner.connection.cancel(self._inner)


class _Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        authority: str,
        ping_after: float,
        ping_timeout: float,
    ) -> None:
        self.reader, self.writer, self.authority = reader, writer, authority
        self.ping_after, self.ping_timeout = ping_after, ping_timeout
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.initiate_connection()
        self.h2.update_settings(
            {
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            }
        )
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.streams: dict[int, _Stream] = {}
        self.limit = 100
        self.failure: Exception | None = None
        self.going_away = False
        self.last_read = time.monotonic()
        self._pong: asyncio.Future[None] | None = None
        self._flush()
        self._reading = asyncio.create_task(self._read())
        self._pinging = asyncio.create_task(self._ping())

    @property
    def open(self) -> bool:
        return self.failure is None and not self.going_away

    def has_room(self) -> bool:
        return self.open and len(self.streams) < max(1, self.limit - HEADROOM)

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(self, path: str, headers: dict[str, str]) -> _Stream:
        stream_id = self.h2.get_next_available_stream_id()
        sent = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", self.authority),
            (":path", path),
            *((name.lower(), value) for name, value in headers.items()),
        ]
        self.h2.send_headers(stream_id, sent, end_stream=True)
        stream = _Stream(self, stream_id)
        self.streams[stream_id] = stream
        self._flush()
        return stream

    def cancel(self, stream: _Stream) -> None:
        if self.streams.pop(stream.stream_id, None) is None or self.failure is not None:
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
            self._flush()

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    raise StreamError("the server closed the connection")
                self.last_read = time.monotonic()
                for event in self.h2.receive_data(data):
                    self._handle(event)
                    if self.failure is not None:
                        return
                self._flush()
        except asyncio.CancelledError:
            raise
        except h2.exceptions.ProtocolError as problem:
            if self.h2.state_machine.state is h2.connection.ConnectionState.CLOSED:
                # A GOAWAY came in this read, and h2 takes no frame after it: the events of
                # the same read are lost with it, which a watch resumed from its last
                # resourceVersion gets again.
                self.fail(GoingAway(f"the server is going away ({problem})"))
            else:
                self.fail(StreamError(str(problem)))
        except Exception as problem:  # a reset, the end: every stream ends
            self.fail(problem if isinstance(problem, StreamError) else StreamError(str(problem)))

    def _handle(self, event: h2.events.Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            headers = {str(k): str(v) for k, v in event.headers or []}
            stream.status = int(headers.get(":status", "0"))
            stream.headers = {k: v for k, v in headers.items() if not k.startswith(":")}
            stream.answered.set()
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                # Given back at once (h2 credits a stream we reset by itself): the windows
                # bound what is in flight, not what waits in a stream's queue. Watch events
                # are taken from it as they come.
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream is not None and event.data:
                stream.chunks.put_nowait(event.data)
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.ended = True
            stream.answered.set()
            stream.chunks.put_nowait(None)
            self.streams.pop(event.stream_id, None)
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
            kind = GoingAway if refused else StreamError
            stream.fail(kind(f"the server reset the stream ({event.error_code!r})"))
            self.streams.pop(event.stream_id, None)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            changed = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            if changed is not None:
                self.limit = int(changed.new_value)
        elif isinstance(event, h2.events.PingAckReceived):
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            # GOAWAY (an API server draining or restarting). h2 takes no frame after it (its
            # connection is CLOSED: the open streams could not be read to their end), so every
            # stream ends now, as a graceful end: each watch resumes on a new connection.
            self.going_away = True
            self.fail(GoingAway(f"the server is going away ({event.error_code!r})"))

    async def _ping(self) -> None:
        """client-go's liveness: PING a connection that has been silent for `ping_after`."""
        try:
            while self.failure is None:
                await asyncio.sleep(min(self.ping_after, 1.0))
                if time.monotonic() - self.last_read < self.ping_after:
                    continue
                self._pong = asyncio.get_running_loop().create_future()
                try:
                    self.h2.ping(os.urandom(8))
                    self._flush()
                except (h2.exceptions.H2Error, OSError) as error:
                    self.fail(StreamError(f"cannot PING: {error}"))
                    return
                try:
                    await asyncio.wait_for(self._pong, self.ping_timeout)
                except TimeoutError:
                    self.fail(
                        StreamError(
                            f"no answer to a PING for {self.ping_timeout:g} s after "
                            f"{self.ping_after:g} s of silence: the connection is dead"
                        )
                    )
        except asyncio.CancelledError:
            raise

    def fail(self, problem: Exception) -> None:
        if self.failure is not None:
            return
        self.failure = problem
        for stream in self.streams.values():
            stream.fail(problem)
        self.streams.clear()
        self.writer.close()
        if asyncio.current_task() is not self._pinging:
            self._pinging.cancel()

    async def close(self) -> None:
        self.fail(StreamError("closed"))
        for task in (self._reading, self._pinging):
            task.cancel()
        await asyncio.gather(self._reading, self._pinging, return_exceptions=True)


class Pool:
    """HTTP/2 connections to one server, opened as streams need room."""

    def __init__(
        self,
        server: str,
        context: ssl.SSLContext | bool,
        *,
        connect_timeout: float,
        ping_after: float = 30.0,
        ping_timeout: float = 15.0,
    ) -> None:
        parts = urlsplit(server)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc
        self.context = context if isinstance(context, ssl.SSLContext) else None
        self.connect_timeout = connect_timeout
        self.ping_after, self.ping_timeout = ping_after, ping_timeout
        self.connections: list[_Connection] = []
        #: Known not to speak HTTP/2: every watch goes over HTTP/1.1 instead.
        self.unavailable = self.context is None
        self._opening = asyncio.Lock()
        #: Closed (new credentials): nothing new is opened here.
        self.closed = False

    async def stream(self, path: str, headers: dict[str, str]) -> Stream:
        """A GET on a connection with room, opening one if none has; Unavailable when the
        server does not speak HTTP/2."""
        if self.unavailable:
            raise Unavailable(self.authority)
        async with self._opening:
            if self.closed:
                raise GoingAway("the connection pool was closed (new credentials)")
            self.connections = [c for c in self.connections if c.failure is None]
            connection = next((c for c in self.connections if c.has_room()), None)
            if connection is None:
                connection = await self._connect()
                if self.closed:
                    await connection.close()
                    raise GoingAway("the connection pool was closed (new credentials)")
                self.connections.append(connection)
            try:
                return Stream(connection.request(path, headers))
            except h2.exceptions.TooManyStreamsError:
                # The server lowered its limit: this connection is full, not broken.
                connection.limit = len(connection.streams) + HEADROOM
                raise GoingAway("the connection is full") from None
            except (h2.exceptions.H2Error, OSError) as error:
                # Closed under us (a GOAWAY, a reset) between the look and the request.
                connection.fail(StreamError(f"the connection failed: {error}"))
                raise StreamError(f"the connection failed: {error}") from None

    async def _connect(self) -> _Connection:
        assert self.context is not None
        self.context.set_alpn_protocols(["h2", "http/1.1"])
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=self.context, server_hostname=self.host
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as error:
            raise StreamError(f"cannot connect to {self.authority}: {error}") from None
        secured = writer.get_extra_info("ssl_object")
        if secured is None or secured.selected_alpn_protocol() != "h2":
            writer.close()
            self.unavailable = True
            raise Unavailable(self.authority)
        return _Connection(reader, writer, self.authority, self.ping_after, self.ping_timeout)

    def streams(self) -> int:
        return sum(len(c.streams) for c in self.connections if c.failure is None)

    async def close(self) -> None:
        self.closed = True
        connections, self.connections = self.connections, []
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


__all__ = ["GoingAway", "Pool", "Stream", "StreamError", "Unavailable"]
