"""A TCP relay: bytes in, bytes out, nothing read or changed (TLS passes through whole).

The test control plane's API server listens on loopback only; pods on the real node live in
their own network namespaces, where loopback is their own. The relay listens on the node's
address and hands every connection to the API server, as a load balancer in front of a real
control plane would; the `kubernetes` Service's endpoints point at it, so pods reach the API
the ordinary in-cluster way (the Service's ClusterIP, through kube-proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Relay:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="relay")
        #: Connections open now, and those that pass nothing on any more (`stall`).
        self._open: set[asyncio.StreamWriter] = set()
        self._stalled: set[asyncio.StreamWriter] = set()

    def stall(self) -> int:
        """Every connection open now stops passing bytes either way, its sockets left open —
        a half-open connection as a client meets one (an API server instance or a load
        balancer gone, NAT state flushed). New connections go through. How many stalled."""
        stalled = set(self._open)
        self._stalled |= stalled
        return len(stalled)

    def connections(self) -> int:
        """Connections open now (stalled ones included, until their client closes them)."""
        return len(self._open)

    def start(self) -> Relay:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        future.result(timeout=10)
        return self

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._relay, *self.listen)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._open.add(writer)
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer, writer),
                self._pipe(upstream_reader, writer, writer),
            )
        finally:
            self._open.discard(writer)
            self._stalled.discard(writer)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if client in self._stalled:
                    # Nothing passes any more; the connection ends when its client gives up.
                    await reader.read()
                    break
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # Connections still open (the operator pods' watches) end here, not with the loop.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
