"""A real Kubernetes control plane for the tests: build it, start it, talk to it as an admin.

The control plane is the project's own Go program in tests/cluster (etcd, kube-apiserver and
kube-controller-manager in one process, from the release pinned in its go.mod). It is built once
per source fingerprint into `.cache/testcluster/` (ignored by git), so only the first run on a
machine pays for the build (about five minutes on 2 cores) and every later one starts it in
seconds.

`python -m support.control_plane` (what `make cluster` runs) starts one for a person and prints
its kubeconfig.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "cluster"
CACHE = ROOT / ".cache" / "testcluster"


def kubernetes_version() -> str:
    """The one place the Kubernetes version is pinned: tests/cluster/go.mod's requirement."""
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)$", (SOURCE / "go.mod").read_text(), re.M)
    assert match, "tests/cluster/go.mod must require k8s.io/kubernetes"
    return match[1]


def fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted([*SOURCE.glob("*.go"), SOURCE / "go.mod", SOURCE / "go.sum"]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class BuildError(RuntimeError):
    pass


def built() -> bool:
    """Whether this source's binary is already in the cache (a warm start)."""
    return (CACHE / fingerprint() / "testcluster").exists()


def build(log: Any = sys.stderr) -> Path:
    """The control plane's binary, built now unless this source was built before."""
    binary = CACHE / fingerprint() / "testcluster"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the tests need Go (1.26) to build a real kube-apiserver from tests/cluster; "
            "install it from https://go.dev/dl/ or your distribution"
        )
    version = kubernetes_version()
    major, minor = version.lstrip("v").split(".")[:2]
    stamp = " ".join(
        f"-X {package}.{name}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        )
    )
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    print(
        f"building the test control plane (Kubernetes {version}) into {binary.parent}; "
        "the first build takes minutes, later runs reuse it",
        file=log,
        flush=True,
    )
    started = time.monotonic()
    result = subprocess.run(
        [go, "build", "-trimpath", "-ldflags", f"-s -w {stamp}", "-o", str(partial), "."],
        cwd=SOURCE,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"go build in {SOURCE} failed:\n{result.stderr[-6000:]}")
    # Renamed only when complete: an interrupted build never leaves a broken binary behind.
    partial.rename(binary)
    print(f"built the control plane in {time.monotonic() - started:.0f} s", file=log, flush=True)
    return binary


@dataclass
class ControlPlane:
    """A running control plane: its admin kubeconfig, server URL, version and state directory."""

    process: subprocess.Popen[bytes]
    kubeconfig: Path
    server: str
    version: str
    directory: Path
    #: The node's components' kubeconfigs (the kubelet as system:node:NAME, kube-proxy).
    node_kubeconfig: Path
    proxy_kubeconfig: Path
    node_name: str

    @property
    def pki(self) -> Path:
        return self.directory / "pki"

    @property
    def log(self) -> Path:
        return self.directory / "cluster.log"

    def stop(self, grace: float = 20) -> None:
        """SIGTERM, and SIGKILL after `grace` seconds: the API server drains its requests for
        several seconds on SIGTERM, which a test run whose state is thrown away need not wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def die_with_parent(command: list[str]) -> list[str]:
    """`command`, made to get SIGTERM when the process that started it dies, even by SIGKILL
    (util-linux's setpriv, in every Debian): no component outlives a killed test run or
    `make cluster` and holds its ports, its etcd directory or the node's bridge."""
    return ["setpriv", "--pdeathsig", "TERM", "--", *command]


def start(
    directory: Path | None = None, args: list[str] | None = None, timeout: float = 180
) -> ControlPlane:
    """Start a control plane and wait until its API answers; `args` go to tests/cluster."""
    binary = build()
    directory = directory or Path(tempfile.mkdtemp(prefix="modelyard-cluster-"))
    process = subprocess.Popen(
        die_with_parent([str(binary), "--dir", str(directory), *(args or [])]),
        stdout=subprocess.PIPE,
        stderr=None,
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    # The program prints one JSON line once /readyz answers, or exits with its reason on stderr.
    while time.monotonic() < deadline and not line:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
    if not line:
        process.kill()
        log = directory / "cluster.log"
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise RuntimeError(f"the control plane did not start (exit {process.poll()}):\n{tail}")
    ready: dict[str, Any] = json.loads(line)
    return ControlPlane(
        process=process,
        kubeconfig=Path(ready["kubeconfig"]),
        server=ready["server"],
        version=ready["version"],
        directory=directory,
        node_kubeconfig=Path(ready["nodeKubeconfig"]),
        proxy_kubeconfig=Path(ready["proxyKubeconfig"]),
        node_name=ready["nodeName"],
    )


#: Where `make cluster`'s registry listens and what it takes: fixed, so that
#: examples/00-quickstart.yaml can name them. Loopback only; the password is no secret.
QUICKSTART_REGISTRY_PORT = 5555
QUICKSTART_CREDENTIALS = ("quickstart", "quickstart-local-only")


def main() -> None:
    """Start a cluster for a person (`make cluster`) and keep it until Ctrl-C.

    The project's CRDs are installed before the kubeconfig is handed out, so
    `kubectl apply --server-side -f crds/ -f examples/` works in one go (on an empty cluster
    kubectl cannot map kinds whose CRDs the same command creates). Where this machine can run
    containers, a real node joins, with a local registry holding the sample model server that
    examples/00-quickstart.yaml runs."""
    # Only this entry point needs these; the tests import them on their own.
    from support.api import Api  # noqa: PLC0415
    from support.cluster import RealNode  # noqa: PLC0415
    from support.node import unavailable  # noqa: PLC0415

    state = Path(os.environ.get("CLUSTER_DIR") or ROOT / ".cache" / "cluster")
    state.mkdir(parents=True, exist_ok=True)
    no_node = unavailable()
    plane = start(state, ["--scheduler"] if no_node is None else [])
    real_node = None
    try:
        api = Api(plane.server, plane.pki)
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            api.apply(crd, "make-cluster")
            api.wait_established(crd["metadata"]["name"])
        if no_node is None:
            real_node = RealNode.start(
                plane,
                api,
                state,
                registry_port=QUICKSTART_REGISTRY_PORT,
                credentials=QUICKSTART_CREDENTIALS,
            )
        print(_instructions(plane, state, real_node is not None, no_node), flush=True)
        # Blocked first: sigwait only takes a signal no handler takes before it.
        stopping = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        signal.sigwait(stopping)
    finally:
        if real_node is not None:
            real_node.stop()
        plane.stop()


def _instructions(plane: ControlPlane, state: Path, with_node: bool, no_node: str | None) -> str:
    """What a person runs next, with a kubectl of the server's own release on PATH."""
    tools = state / "bin"
    tools.mkdir(exist_ok=True)
    kubectl = tools / "kubectl"
    kubectl.unlink(missing_ok=True)
    kubectl.symlink_to(build())
    # The operator runs on this machine, outside the cluster: it reaches a Model's Service
    # by its ClusterIP, which the node's kube-proxy routes here.
    config = state / "operator-config.yaml"
    config.write_text(yaml.safe_dump({"probes": {"serviceAddress": "{clusterIP}:{port}"}}))
    exports = f"  export KUBECONFIG={plane.kubeconfig} PATH={tools}:$PATH"
    if with_node:
        return (
            f"Kubernetes {plane.version} at {plane.server} with one node (kubelet, containerd, "
            f"kube-proxy), a registry on 127.0.0.1:{QUICKSTART_REGISTRY_PORT} holding "
            "modelyard/model-server:1.0.0, and modelyard's CRDs (log: "
            f"{plane.log}).\n\n{exports} MODELYARD_CONFIG={config}\n"
            "  kubectl apply --server-side -f examples/00-quickstart.yaml\n"
            "  make run\n\n"
            "Then `kubectl get modelyard -n quickstart` shows the Model READY with a running "
            "pod. Ctrl-C stops everything and cleans up; objects are kept in "
            f"{state} for the next start (delete it for a fresh cluster)."
        )
    return (
        f"Kubernetes {plane.version} at {plane.server}, modelyard's CRDs installed (log: "
        f"{plane.log})\n\n{exports}\n"
        "  kubectl apply --server-side -f crds/ -f examples/\n"
        "  make run\n\n"
        f"No node ({no_node}): pods stay Pending. Ctrl-C stops it; objects are kept in "
        f"{state} for the next start (delete it for a fresh cluster)."
    )


if __name__ == "__main__":
    main()
