"""A played kubelet, not a real node: thousands of pods are more than one test node runs on 2 cores.

The pods are reported running and ready as a kubelet would report them (support.controllers'
status), so the operator sees what it would see; and the moment each Model then says READY is
taken from a watch.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

from load import MODELS

from support.api import Api, ApiRefusal, resource_path
from support.controllers import kubelet_status, ready_pod_status


class Kubelet:
    """Reports every pod of the namespaces running and ready, as kubelets would; not counted:
    its requests are the admin's, which the audit policy leaves out."""

    def __init__(self, api: Api, namespaces: list[str]) -> None:
        self.api, self.namespaces = api, namespaces
        self.done: set[str] = set()

    def run_all(self) -> int:
        pods = [
            p
            for ns in self.namespaces
            for p in self.api.list("v1/pods", ns)
            if p["metadata"]["name"] not in self.done
        ]
        status = ready_pod_status()

        def report(pod: dict[str, Any]) -> None:
            name = pod["metadata"]["name"]
            try:
                self.api.patch(
                    "v1/pods",
                    pod["metadata"]["namespace"],
                    name,
                    {"status": kubelet_status(pod, status)},
                    subresource="status",
                    manager="kubelet",
                    merge=True,
                )
                self.done.add(name)
            except ApiRefusal as refused:
                if refused.code != 404:  # 404: replaced meanwhile
                    raise

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(report, pods))
        return len(pods)


class ReadyWatch:
    """When each Model first reported READY, from a watch on every namespace's Models: READY is
    a status the operator writes, so the audit log's Metadata level cannot tell it."""

    def __init__(self, api: Api) -> None:
        self.api, self.ns = api, None
        self.ready: dict[str, float] = {}
        self.stopped = threading.Event()
        listing = api.request("GET", resource_path(MODELS, None), query={"limit": "1"})
        self._since = listing["metadata"]["resourceVersion"]
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        while not self.stopped.is_set():
            try:
                for event in self.api.watch(MODELS, self.ns, self._since, seconds=5):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        break
                    self._since = obj["metadata"]["resourceVersion"]
                    if (obj.get("status") or {}).get("state") == "READY":
                        self.ready.setdefault(obj["metadata"]["name"], time.time())
            except Exception:  # a dropped stream: watch again
                time.sleep(0.2)
