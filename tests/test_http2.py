"""Watches as HTTP/2 streams, on the real API server over TLS (the server speaks h2 by ALPN).

Most tests reach the server through the fault proxy, which speaks HTTP/1.1, so their watches
take the HTTP/1.1 way. These talk to the server directly — or through a TCP relay that passes
TLS whole and can go silent on cue — so the watches are HTTP/2 streams: many on a connection,
each still getting its events, and a connection that goes silent is found out by a PING and
closed, failing every watch on it so each resumes elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hyperframe.frame
import pytest
import yaml

from modelyard.kube import ApiError, Credentials, Kube, path
from support.cluster import Cluster
from support.controllers import DEPLOYMENTS
from support.examples import example
from support.operator_process import OperatorProcess, eventually, free_port
from support.registry import self_signed
from support.relay import Relay
from test_operator import embedding_documents

WATCHES = 150


def client(cluster: Cluster, server: str | None = None, **options: Any) -> Kube:
    plane = cluster.session.plane
    credentials = Credentials(
        server=server or plane.server,
        token=cluster.session.token,
        ca_path=str(plane.pki / "ca.crt"),
    )
    return Kube(lambda: credentials, "modelyard", **options)


def model(cluster: Cluster, name: str) -> dict[str, Any]:
    found = example("Model", "docs-embedder")
    found["metadata"] = {"name": name, "namespace": cluster.namespace}
    return found


async def test_watches_share_a_connection_and_each_gets_its_events(cluster: Cluster) -> None:
    kube = client(cluster)
    url = path("modelyard.dev/v1alpha1", "Model", cluster.namespace)
    seen: list[set[str]] = [set() for _ in range(WATCHES)]

    async def watch(index: int) -> None:
        async for event in kube.watch(url, {"allowWatchBookmarks": "true"}):
            if event.get("type") == "ADDED":
                seen[index].add(event["object"]["metadata"]["name"])

    watching = [asyncio.create_task(watch(index)) for index in range(WATCHES)]
    try:
        await asyncio.sleep(2)
        how, connections = kube.watch_connections()
        assert (how, connections) == ("HTTP/2", 2), "150 streams, at most 90 a connection"
        started = time.monotonic()
        listed = await kube.list(url, {})  # calls are not held up by the streams
        assert time.monotonic() - started < 2 and listed.get("items") == []
        await cluster.apply(model(cluster, "seen-by-all"))
        await eventually(
            lambda: all("seen-by-all" in names for names in seen), 10, "every watch's ADDED"
        )
    finally:
        for task in watching:
            task.cancel()
        await asyncio.gather(*watching, return_exceptions=True)
        await kube.close()


async def test_a_silent_connection_is_found_out_by_a_ping(cluster: Cluster) -> None:
    """No idle limit on the watch: only the PING can tell. The relay goes silent both ways
    with the connection open; the watch fails within ping_after + ping_timeout, and a new one
    (a new connection: the relay passes those) gets the events again."""
    port = int(cluster.session.plane.server.rsplit(":", 1)[1])
    relay = Relay(("127.0.0.1", free_port()), ("127.0.0.1", port)).start()
    kube = client(cluster, f"https://127.0.0.1:{relay.listen[1]}", ping_after=1.0, ping_timeout=1.0)
    url = path("modelyard.dev/v1alpha1", "Model", cluster.namespace)
    try:
        stream = kube.watch(url, {})
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(1.5)
        assert kube.watch_connections() == ("HTTP/2", 1)
        assert relay.stall() >= 1
        stalled = time.monotonic()
        with pytest.raises(ApiError, match="PING"):
            await asyncio.wait_for(first, 10)
        noticed = time.monotonic() - stalled
        assert noticed < 1.0 + 1.0 + 1.5, f"noticed after {noticed:.1f} s"
        await stream.aclose()
        again = kube.watch(url, {})
        waiting = asyncio.ensure_future(again.__anext__())
        await asyncio.sleep(1)
        await cluster.apply(model(cluster, "after-the-silence"))
        event = await asyncio.wait_for(waiting, 10)
        assert event["object"]["metadata"]["name"] == "after-the-silence"
        await again.aclose()
    finally:
        await kube.close()
        relay.stop()


@pytest.mark.timeout(300)
async def test_an_operator_serving_fifty_namespaces_is_ready_on_a_few_connections(
    cluster: Cluster, tmp_path: Path
) -> None:
    """500 watches (ten kinds in each of 50 namespaces) as streams: ready, the last
    namespace's Model reconciled, and a few dozen connections to the API server — the calls'
    bounded pool and the streams' few — where HTTP/1.1 took one per watch."""
    plane = cluster.session.plane
    namespaces = [cluster.namespace] + [f"{cluster.namespace}-{i}" for i in range(1, 50)]
    for namespace in namespaces[1:]:
        await cluster.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
    kubeconfig = tmp_path / "direct.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "direct",
                        "cluster": {
                            "server": plane.server,
                            "certificate-authority": str(plane.pki / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": "operator", "user": {"token": cluster.session.token}}],
                "contexts": [
                    {"name": "direct", "context": {"cluster": "direct", "user": "operator"}}
                ],
                "current-context": "direct",
            }
        )
    )
    operator = OperatorProcess(
        kubeconfig, tmp_path, namespaces=namespaces, health_port=free_port(), verbose=False
    ).start()
    try:
        await eventually(lambda: operator.readyz() == (200, "leading\n"), 90, "/readyz", operator)
        last = namespaces[-1]
        for document in embedding_documents():
            await cluster.apply(
                {**document, "metadata": {**document["metadata"], "namespace": last}}
            )
        await eventually(
            lambda: cluster.get(DEPLOYMENTS, last, "docs-embedder"), 30, "the last one", operator
        )
        opened = operator.connections_to(int(plane.server.rsplit(":", 1)[1]))
        assert opened <= 50, f"{opened} connections for 500 watches"
    finally:
        await operator.stop()
        for namespace in namespaces[1:]:
            await cluster.remove("v1/namespaces", None, namespace)


class Draining:
    """An HTTP/2 server over TLS that answers a watch with one event, then GOAWAY, then another
    event on the same stream — what a Go server does when it drains a connection (in-flight
    streams go on). The API server sends GOAWAY only when it shuts down, which the tests'
    control plane (it embeds etcd) cannot do on cue: hence this server."""

    def __init__(self, directory: Path) -> None:
        self.cert, self.key = directory / "server.crt", directory / "server.key"
        self_signed(self.cert, self.key, "127.0.0.1")
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        context.set_alpn_protocols(["h2"])
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0, ssl=context)
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        connection.initiate_connection()
        writer.write(connection.data_to_send())
        event = b'{"type":"ADDED","object":{"metadata":{"name":"%s","resourceVersion":"%d"}}}\n'
        with contextlib.suppress(OSError, h2.exceptions.H2Error):
            while data := await reader.read(65536):
                for received in connection.receive_data(data):
                    if isinstance(received, h2.events.RequestReceived):
                        stream = received.stream_id
                        connection.send_headers(stream, [(":status", "200")])
                        connection.send_data(stream, event % (b"before", 1))
                        writer.write(connection.data_to_send())
                        await writer.drain()
                        await asyncio.sleep(0.2)
                        connection.close_connection(last_stream_id=stream)
                        # More of the stream after the GOAWAY, as a Go server sends it (h2
                        # itself refuses to, hence the frame made by hand).
                        after = hyperframe.frame.DataFrame(stream, data=event % (b"after", 2))
                        writer.write(connection.data_to_send() + after.serialize())
                        await writer.drain()
                        continue
                writer.write(connection.data_to_send())
                await writer.drain()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_draining_server_ends_its_watches_gracefully(tmp_path: Path) -> None:
    """A GOAWAY ends every watch on the connection as a normal end — the informer resumes at
    once from its last resourceVersion, on a new connection — not as a failure with a backoff
    (the h2 library takes no frame after a GOAWAY, so the streams cannot be read on)."""
    draining = Draining(tmp_path)
    port = await draining.start()
    credentials = Credentials(
        server=f"https://127.0.0.1:{port}", token="t", ca_path=str(draining.cert)
    )
    kube = Kube(lambda: credentials, "modelyard")
    try:
        for round_ in (1, 2):
            names = [e["object"]["metadata"]["name"] async for e in kube.watch("/api/v1/pods", {})]
            assert names[0] == "before", names
            assert draining.connections == round_, "each watch after a GOAWAY on a new one"
    finally:
        await kube.close()
        draining.stop()
