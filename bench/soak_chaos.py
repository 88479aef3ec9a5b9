"""The soak's faults, one at random every 15 to 40 s. Each is over when it returns: what it
broke is restored (a killed leader restarted, the registry and the consent back), or left for
the operators to recover from (a stalled watch, a deleted pod); so once the chaos stops nothing
more is done to them, and convergence can be asked of them.

The API server's outage is played at the fault proxy, where an operator meets one: the server
process embeds the cluster's etcd and is not restarted.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

from support.controllers import CONSENT, PODS

if TYPE_CHECKING:
    from soak_stage import Soak


class Chaos:
    """The faults, named by their methods: the report counts each under its method's name."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak

    async def run(self, until: float) -> None:
        faults = [
            self.kill_leader,
            self.api_outage,
            self.stall_watches,
            self.delete_serving_pod,
            self.registry_outage,
            self.revoke_consent,
        ]
        while time.monotonic() < until:
            await asyncio.sleep(random.uniform(15, 40))
            fault = random.choice(faults)
            try:
                await fault()
                self.soak.report.faults[fault.__name__.replace("_", " ")] += 1
            except Exception as error:
                print(f"chaos: {fault.__name__}: {error}", flush=True)

    async def kill_leader(self) -> None:
        name = await asyncio.to_thread(self.soak.leader)
        if name is None:
            return
        await self.soak.operators[name].kill()
        await asyncio.sleep(2)
        self.soak.start_operator(name)

    async def api_outage(self) -> None:
        proxy = self.soak.cluster.proxy
        refused = [proxy.fail(method, r".", 503, times=None) for method in ("*",)]
        await self.soak.cluster.drop_watches()
        await asyncio.sleep(5)
        await self.soak.cluster.expire_history()
        for fault in refused:
            proxy.faults.remove(fault)

    async def stall_watches(self) -> None:
        self.soak.cluster.proxy.stall_watches("")

    async def delete_serving_pod(self) -> None:
        pods = [
            p
            for p in await asyncio.to_thread(self.soak.api.list, PODS, self.soak.ns)
            if (p["metadata"].get("labels") or {}).get("modelyard.dev/track") != "canary"
            and not p["metadata"].get("deletionTimestamp")
        ]
        if pods:
            pod = random.choice(pods)
            await asyncio.to_thread(
                self.soak.api.delete, PODS, self.soak.ns, pod["metadata"]["name"]
            )

    async def registry_outage(self) -> None:
        await self.soak.node.registry.stop()
        await asyncio.sleep(20)
        await self.soak.node.registry.start()

    async def revoke_consent(self) -> None:
        secret = "local-registry-credentials"
        label = next(iter(CONSENT))
        await asyncio.to_thread(
            self.soak.api.patch,
            "v1/secrets",
            self.soak.ns,
            secret,
            {"metadata": {"labels": {label: None}}},
        )
        await asyncio.sleep(20)
        await asyncio.to_thread(
            self.soak.api.patch,
            "v1/secrets",
            self.soak.ns,
            secret,
            {"metadata": {"labels": CONSENT}},
        )
