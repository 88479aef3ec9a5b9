"""Kubernetes API clients side by side: modelyard's own (`modelyard.kube`, aiohttp) against
maintained asynchronous clients, doing the operator's kind of work on the real control plane.

    make bench-clients            # or: python bench/clients.py --n 1000

Each client runs in a process of its own (so its imports and memory are its own): N server-side
applies of a Secret, N merge patches of them, a paginated list of them, N deletes — 32
requests in flight, as modelyard's client allows. Reported per client: wall time per phase, the
process's CPU time, and its peak resident memory (imports included). The maintained clients are
installed apart into .cache/bench-clients, never into the project's environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from paths import ROOT, install_apart

LIBRARIES = ROOT / ".cache" / "bench-clients"
REQUIREMENTS = ["kubernetes_asyncio==36.1.0", "kr8s==0.20.15"]
CONCURRENCY = 32
PHASES = ("apply", "patch", "list", "delete")


def secret(namespace: str, index: int) -> dict[str, Any]:
    """A kind every client knows (ours knows only the operator's), about a Deployment's size."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"obj-{index:05d}", "namespace": namespace, "labels": {"bench": "1"}},
        "stringData": {"MODEL_PATH": f"s3://models/{index}", "padding": "x" * 1500},
    }


async def limited(n: int, call: Callable[[int], Awaitable[None]]) -> float:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int) -> None:
        async with gate:
            await call(index)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started


# -- the clients, each given the same four operations ------------------------------------------


class Ours:
    """modelyard.kube.Kube: what the operator uses."""

    def __init__(self, kubeconfig: str) -> None:
        os.environ["KUBECONFIG"] = kubeconfig
        from modelyard.kube import Kube, login  # noqa: PLC0415 -- its import is its cost

        self.kube = Kube(login.login, "bench")

    async def apply(self, body: dict[str, Any]) -> None:
        await self.kube.apply(body)

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        url = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        await self.kube._call("PATCH", url, patch, None, "application/merge-patch+json")

    async def list(self, namespace: str) -> int:
        count, query = 0, {"limit": "500", "labelSelector": "bench=1"}
        while True:
            page = await self.kube.list(f"/api/v1/namespaces/{namespace}/secrets", query)
            count += len(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return count
            query = {**query, "continue": token}

    async def delete(self, namespace: str, name: str) -> None:
        await self.kube.delete("v1", "Secret", namespace, name)

    async def close(self) -> None:
        await self.kube.close()


class KubernetesAsyncio:
    """kubernetes_asyncio (the official client's generated API, on aiohttp), raw JSON where its
    models would cost a parse into objects."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.client: Any = None

    async def start(self) -> None:
        from kubernetes_asyncio import client, config  # noqa: PLC0415

        await config.load_kube_config(config_file=self.kubeconfig)
        self.api_client = client.ApiClient()
        self.api_client.rest_client.pool_manager.connector._limit = CONCURRENCY + 4
        self.core = client.CoreV1Api(self.api_client)

    async def apply(self, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        await self.core.patch_namespaced_secret(
            metadata["name"],
            metadata["namespace"],
            body,
            field_manager="bench",
            force=True,
            _content_type="application/apply-patch+yaml",
            _preload_content=False,
        )

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await self.core.patch_namespaced_secret(
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )

    async def list(self, namespace: str) -> int:
        count, token = 0, None
        while True:
            response = await self.core.list_namespaced_secret(
                namespace,
                limit=500,
                label_selector="bench=1",
                _continue=token,
                _preload_content=False,
            )
            page = json.loads(await response.read())
            count += len(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return count

    async def delete(self, namespace: str, name: str) -> None:
        await self.core.delete_namespaced_secret(name, namespace, _preload_content=False)

    async def close(self) -> None:
        await self.api_client.close()


class Kr8s:
    """kr8s (httpx), through its raw `call_api`, as its objects would add a layer on top."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig

    async def start(self) -> None:
        import kr8s.asyncio  # noqa: PLC0415

        self.api = await kr8s.asyncio.api(kubeconfig=self.kubeconfig)

    async def _call(self, method: str, url: str, namespace: str, **kwargs: Any) -> Any:
        async with self.api.call_api(
            method, version="v1", base="/api", namespace=namespace, url=url, **kwargs
        ) as response:
            return response.json() if method == "GET" else None

    async def apply(self, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        await self._call(
            "PATCH",
            f"secrets/{metadata['name']}",
            metadata["namespace"],
            content=json.dumps(body),
            headers={"Content-Type": "application/apply-patch+yaml"},
            params={"fieldManager": "bench", "force": "true"},
        )

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await self._call(
            "PATCH",
            f"secrets/{name}",
            namespace,
            content=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def list(self, namespace: str) -> int:
        count, params = 0, {"limit": "500", "labelSelector": "bench=1"}
        while True:
            page = await self._call("GET", "secrets", namespace, params=params)
            count += len(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return count
            params = {**params, "continue": token}

    async def delete(self, namespace: str, name: str) -> None:
        await self._call("DELETE", f"secrets/{name}", namespace)

    async def close(self) -> None:
        return None


CLIENTS: dict[str, Callable[[str], Any]] = {
    "modelyard.kube (ours)": Ours,
    "kubernetes_asyncio": KubernetesAsyncio,
    "kr8s": Kr8s,
}


async def exercise(name: str, kubeconfig: str, namespace: str, n: int) -> dict[str, Any]:
    """In the client's own process: the four phases, timed."""
    started = time.perf_counter()
    client = CLIENTS[name](kubeconfig)
    if hasattr(client, "start"):
        await client.start()
    figures: dict[str, Any] = {"client": name, "start_s": time.perf_counter() - started}
    figures["apply_s"] = await limited(n, lambda i: client.apply(secret(namespace, i)))
    figures["patch_s"] = await limited(
        n,
        lambda i: client.patch(namespace, f"obj-{i:05d}", {"stringData": {"MODEL_PATH": f"p{i}"}}),
    )
    listing = time.perf_counter()
    assert await client.list(namespace) == n
    figures["list_s"] = time.perf_counter() - listing
    figures["delete_s"] = await limited(n, lambda i: client.delete(namespace, f"obj-{i:05d}"))
    await client.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures["cpu_s"] = usage.ru_utime + usage.ru_stime
    figures["peak_rss_mb"] = usage.ru_maxrss / 1024
    return figures


def libraries() -> Path:
    return install_apart(LIBRARIES, "kr8s", REQUIREMENTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="each client this many times")
    parser.add_argument("--child", nargs=3, metavar=("CLIENT", "KUBECONFIG", "NAMESPACE"))
    args = parser.parse_args()
    if args.child:
        name, kubeconfig, namespace = args.child
        print(json.dumps(asyncio.run(exercise(name, kubeconfig, namespace, args.n))))
        return

    sys.path.insert(0, str(ROOT / "tests"))
    from support import control_plane  # noqa: PLC0415
    from support.api import Api  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="modelyard-clients-"))
    plane = control_plane.start(work / "cluster")
    extra = libraries()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CLIENTS}
    try:
        api = Api(plane.server, plane.pki)
        for round_ in range(args.rounds):
            for name in CLIENTS:
                namespace = f"clients-{round_}-{len(results[name])}-{abs(hash(name)) % 1000}"
                api.apply(
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
                )
                child = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--n",
                        str(args.n),
                        "--child",
                        name,
                        str(plane.kubeconfig),
                        namespace,
                    ],
                    env={**os.environ, "PYTHONPATH": f"{extra}:{ROOT / 'operator'}"},
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if child.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{child.stderr[-3000:]}")
                results[name].append(json.loads(child.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[name][-1]), flush=True)
    finally:
        plane.stop(grace=1)
    print(
        f"\n| client ({args.n} objects, median of {args.rounds}) | "
        + " | ".join(f"{phase} (s)" for phase in PHASES)
        + " | CPU (s) | peak RSS (MB) |"
    )
    print("|---|" + "---|" * (len(PHASES) + 2))
    for name, runs in results.items():

        def median(key: str, runs: list[dict[str, Any]] = runs) -> float:
            values = sorted(run[key] for run in runs)
            return values[len(values) // 2]

        cells = " | ".join(f"{median(f'{phase}_s'):.2f}" for phase in PHASES)
        print(f"| {name} | {cells} | {median('cpu_s'):.2f} | {median('peak_rss_mb'):.0f} |")


if __name__ == "__main__":
    main()
