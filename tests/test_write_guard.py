"""The API client never writes for a process whose Lease may have moved.

A leader's allowance to write ends at its renew deadline, before its Lease can expire for a
standby. The client (`modelyard.kube.Kube`) asks for it when a write is asked for, again when the
write's turn comes (it may wait behind 32 calls in flight), and again before a retry after a new
login; and a write may not take longer than what is left of it. Here the client runs in the test
against the real API server through the fault proxy, which holds calls and answers 401s on cue;
what reached the server is read back from the server itself.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import pytest

from modelyard.kube import CONCURRENCY, ApiError, Credentials, Kube, NotLeading, path
from support.cluster import Cluster

SERVICES = "v1/services"


def client(
    cluster: Cluster, allowance: Callable[[], float], logged_in: Callable[[], None] | None = None
) -> Kube:
    """A client as the operator's, under the chart's service account, through the proxy."""

    def login() -> Credentials:
        if logged_in is not None:
            logged_in()
        return Credentials(server=cluster.url, token=cluster.session.token)

    kube = Kube(login, "modelyard")
    kube.write_allowance = allowance
    return kube


def service(cluster: Cluster, name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": cluster.namespace},
        "spec": {"ports": [{"port": 80}], "selector": {"app": name}},
    }


async def test_a_write_whose_turn_comes_after_the_lease_moved_is_never_sent(
    cluster: Cluster,
) -> None:
    allowance = [math.inf]
    kube = client(cluster, lambda: allowance[0])
    try:
        models = path("modelyard.dev/v1alpha1", "Model", cluster.namespace)
        cluster.fail("GET", r"/models$", code=0, times=None, delay=3)
        held = [asyncio.create_task(kube.list(models, {})) for _ in range(CONCURRENCY)]
        await asyncio.sleep(0.5)  # every turn is taken
        write = asyncio.create_task(kube.apply(service(cluster, "late")))
        await asyncio.sleep(0.5)
        allowance[0] = 0.0  # the Lease moved while the write waited for its turn
        with pytest.raises(NotLeading):
            await write
        await asyncio.gather(*held)
    finally:
        await kube.close()
    assert cluster.get(SERVICES, cluster.namespace, "late") is None
    assert [s for s in cluster.served if s.method == "PATCH"] == []


async def test_a_write_is_not_sent_again_after_a_new_login_once_the_lease_moved(
    cluster: Cluster,
) -> None:
    allowance = [math.inf]
    logins = []

    def logged_in() -> None:
        logins.append(time.monotonic())
        if len(logins) > 1:  # the Lease moved while the process logged in again
            allowance[0] = 0.0

    kube = client(cluster, lambda: allowance[0], logged_in)
    try:
        cluster.fail("PATCH", r"/services/relogin$", 401, times=1)
        with pytest.raises(NotLeading):
            await kube.apply(service(cluster, "relogin"))
    finally:
        await kube.close()
    assert len(logins) == 2
    assert [s.status for s in cluster.served if s.method == "PATCH"] == [401]
    assert cluster.get(SERVICES, cluster.namespace, "relogin") is None


async def test_a_write_held_up_past_the_allowance_is_abandoned_and_never_lands(
    cluster: Cluster,
) -> None:
    """The proxy holds the write for 5 s, then forwards it if its client is still there; the
    process may write for 2 s more only."""
    until = time.monotonic() + 2
    kube = client(cluster, lambda: max(0.0, until - time.monotonic()))
    try:
        cluster.fail("PATCH", r"/services/slow$", code=0, times=1, delay=5)
        started = time.monotonic()
        with pytest.raises(NotLeading):
            await kube.apply(service(cluster, "slow"))
        assert time.monotonic() - started < 3
        await asyncio.sleep(4)  # the proxy's hold ends: nothing is left to forward
    finally:
        await kube.close()
    assert cluster.get(SERVICES, cluster.namespace, "slow") is None


async def test_a_slow_write_while_the_lease_is_renewed_is_a_timeout_not_a_lost_lease(
    cluster: Cluster,
) -> None:
    """A write slowed past what was left of the allowance when it was sent (a slow webhook),
    while renewals go on: a temporary failure, retried by the runner, not a lost Lease."""
    kube = client(cluster, lambda: 2.0)  # renewed all along: always 2 s left
    try:
        cluster.fail("PATCH", r"/services/webhooked$", code=0, times=1, delay=4)
        with pytest.raises(ApiError) as raised:
            await kube.apply(service(cluster, "webhooked"))
        assert raised.value.temporary
    finally:
        await kube.close()
