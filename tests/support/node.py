"""A real node joined to the test control plane: containerd, runc, CNI, a kubelet and kube-proxy.

The kubelet and kube-proxy are the same binary as the control plane (tests/cluster), so they are
of the same Kubernetes release; containerd 2 is built from its Go module (`support.containerd`:
Debian's 1.6 cannot mount image volumes); runc and the CNI plugins come from Debian's packages
(`.ci/run` installs them). Pods run as real containers, pulled from the session's local registry
with the pull Secret the operator wrote, and the kubelet — not a test — reports whether they run,
crash or answer their readiness probe.

Everything lives under one state directory and on addresses of 198.18.0.0/15 (RFC 2544's
benchmarking range, never routed on the Internet), so nothing the node does can leave the
machine:

- the node's address is 198.18.0.1/32 on `lo` (the API server reaches the kubelet there);
- pods get 198.18.16.0/20 on the bridge `myard0`, without masquerading, and a FORWARD rule
  drops anything they send outside 198.18.0.0/15;
- Services get ClusterIPs of 198.19.0.0/16, routed to the pods' bridge, where no neighbour
  answers for them: a packet kube-proxy has not rewritten to a pod goes nowhere, so a
  ClusterIP is only ever reached through kube-proxy's rules on this machine;
- the rest of 198.18.0.0/15 is unreachable;
- containerd may pull only from the local registry: its proxy for every other host is a closed
  port on loopback, so an image reference from an example (quay.io, ...) fails to pull here
  without a single packet or DNS query leaving the machine;
- pods get no DNS servers.

`stop()` undoes all of it: pods and their shims, mounts, cgroups, the bridge, the routes and
addresses, and the iptables chains that kube-proxy, the CNI plugins and the kubelet added.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support import containerd
from support.control_plane import die_with_parent

#: The whole test network; nothing outside it is ever a destination.
TEST_NETWORK = "198.18.0.0/15"
NODE_IP = "198.18.0.1"
POD_CIDR = "198.18.16.0/20"
SERVICE_CIDR = "198.19.0.0/16"
BRIDGE = "myard0"
#: The FORWARD chain of ours that keeps pods' traffic inside the test network.
FORWARD_CHAIN = "MODELYARD-TEST-NODE"
CNI_NETWORK = "modelyard-test"
#: A port nothing listens on: containerd's proxy for every registry but the local one.
NOWHERE = "http://127.0.0.1:9"
#: The pause image, imported into containerd rather than pulled (the sandbox image is pulled
#: without credentials, and the local registry demands them).
PAUSE_IMAGE = "modelyard.test/pause:1"
CNI_BIN = Path("/usr/lib/cni")
#: Where a running node notes its state directory, so that a run killed before it could clean
#: up is cleaned up by the next.
MARKER = Path("/run/modelyard-test-node.json")
TOOLS = ("runc", "iptables", "ip")


def unavailable() -> str | None:
    """Why this machine cannot run a node, or None when it can."""
    if os.geteuid() != 0:
        return "a real node needs root (containerd, runc, network namespaces, cgroups)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not (CNI_BIN / "bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        return (
            f"a real node needs {', '.join(missing)} "
            "(apt-get install runc containernetworking-plugins iptables conntrack)"
        )
    if (
        not Path("/sys/fs/cgroup/memory").is_dir()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        return "a real node needs cgroups (/sys/fs/cgroup has none mounted)"
    return None


def run(*command: str, check: bool = True, timeout: float = 60) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def quietly(*command: str) -> None:
    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, OSError):
        run(*command, check=False, timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cgroup_roots() -> list[Path]:
    """The mount point of every cgroup hierarchy (v1: one per controller; v2: one)."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return [root]
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]


@dataclass
class Node:
    """One node: `start()` it against a running control plane, `stop()` it at the end."""

    directory: Path
    binary: Path
    kubeconfig: Path
    proxy_kubeconfig: Path
    name: str
    #: host:port of the local registry containerd pulls from (plain HTTP).
    registry: str
    pause_archive: Path
    #: The directory of containerd, its runc shim and ctr (`support.containerd`).
    runtime: Path
    kubelet_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # -- paths ----------------------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.directory / "containerd" / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.directory / "kubelet"

    @property
    def cgroup_parent(self) -> str:
        """The cgroup every pod of this node lives under, apart from the machine's own."""
        return f"/modelyard-{self.name}"

    def log(self, component: str) -> Path:
        return self.directory / f"{component}.log"

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> Node:
        self.directory.mkdir(parents=True, exist_ok=True)
        clean_up_after_an_earlier_run(self.name)
        MARKER.write_text(
            json.dumps({"directory": str(self.directory), "name": self.name, "owner": os.getpid()})
        )
        try:
            self._network()
            self._containerd()
            self._kubelet()
            self._kube_proxy()
        except BaseException:
            self.stop()
            raise
        return self

    def _network(self) -> None:
        quietly("ip", "addr", "del", f"{NODE_IP}/32", "dev", "lo")
        run("ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
        # The bridge plugin adopts the bridge made here; made early so that the Service range
        # has a route before the first pod (the first routing decision precedes kube-proxy's
        # rewrite, and must not fall to the default route).
        quietly("ip", "link", "del", BRIDGE)
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "link", "set", BRIDGE, "up")
        run("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE)
        run("ip", "route", "replace", "unreachable", TEST_NETWORK)
        quietly("iptables", "-D", "FORWARD", "-j", FORWARD_CHAIN)
        quietly("iptables", "-F", FORWARD_CHAIN)
        quietly("iptables", "-X", FORWARD_CHAIN)
        run("iptables", "-N", FORWARD_CHAIN)
        run("iptables", "-A", FORWARD_CHAIN, "-s", POD_CIDR, "!", "-d", TEST_NETWORK, "-j", "DROP")
        run("iptables", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)
        # Pods reach each other and are reached from the host across the bridge.
        with contextlib.suppress(OSError):
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1")

    def _containerd(self) -> None:
        base = self.directory / "containerd"
        (base / "certs.d" / self.registry).mkdir(parents=True, exist_ok=True)
        (base / "certs.d" / self.registry / "hosts.toml").write_text(
            f'server = "http://{self.registry}"\n'
            f'[host."http://{self.registry}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        cni_conf = self.directory / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-modelyard-test.conflist").write_text(json.dumps(self._cni(), indent=2))
        config = base / "config.toml"
        config.write_text(
            f"""version = 3
root = "{base / "root"}"
state = "{base / "state"}"
# Nothing from /etc/containerd: this node is configured here alone.
imports = []
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins.'io.containerd.internal.v1.opt']
  path = "{base / "opt"}"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{base / "certs.d"}"
[plugins.'io.containerd.cri.v1.runtime']
  # These machines lack CAP_SYS_RESOURCE: without this every container fails to start
  # ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{CNI_BIN}"]
    conf_dir = "{cni_conf}"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    # Pinned by path: a containerd 1.6 shim on PATH (Debian's) is never the one started.
    runtime_path = "{self.runtime / "containerd-shim-runc-v2"}"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      SystemdCgroup = false
      BinaryName = "{shutil.which("runc") or "runc"}"
"""
        )
        # Go's HTTP client sends every request through the proxy but those to loopback, so
        # no other registry is ever looked up or dialled.
        nowhere = {
            name: NOWHERE for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
        }
        self._spawn(
            "containerd",
            [str(self.runtime / "containerd"), "--config", str(config)],
            environment={**os.environ, **nowhere, "NO_PROXY": "", "no_proxy": ""},
        )
        deadline = time.monotonic() + 30
        while not self._ctr_answers():
            self._alive("containerd")
            assert time.monotonic() < deadline, (
                f"containerd did not start: {self._tail('containerd')}"
            )
            time.sleep(0.1)
        self.ctr("images", "import", "--no-unpack=false", str(self.pause_archive))

    def ctr(self, *args: str) -> str:
        return run(*self._ctr, "--namespace", "k8s.io", *args)

    @property
    def _ctr(self) -> tuple[str, ...]:
        return (str(self.runtime / "ctr"), "--address", str(self.socket))

    def _ctr_answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            run(*self._ctr, "version", timeout=5)
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return True

    def _cni(self) -> dict[str, Any]:
        return {
            "cniVersion": "0.4.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    # No masquerading: pods' packets keep their own address and are dropped by
                    # the FORWARD chain if they head anywhere outside the test network.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": TEST_NETWORK}],
                        "dataDir": str(self.directory / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _kubelet(self) -> None:
        for hierarchy in cgroup_roots():
            (hierarchy / self.cgroup_parent.lstrip("/")).mkdir(exist_ok=True)
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        config = self.directory / "kubelet-config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": NODE_IP,
                    "port": self.kubelet_port,
                    "readOnlyPort": 0,
                    "healthzPort": 0,
                    # The API server's requests (logs, exec) are the only ones, on this machine.
                    "authentication": {
                        "anonymous": {"enabled": True},
                        "webhook": {"enabled": False},
                    },
                    "authorization": {"mode": "AlwaysAllow"},
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "imageServiceEndpoint": f"unix://{self.socket}",
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": self.cgroup_parent,
                    "failCgroupV1": False,
                    "failSwapOn": False,
                    "podLogsDir": str(self.directory / "pod-logs"),
                    # Pods get no DNS servers: nothing they resolve could be reached anyway.
                    "resolvConf": "",
                    "serializeImagePulls": False,
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    # The tests watch crash loops and rollouts; a node reports them as they happen.
                    "nodeStatusUpdateFrequency": "4s",
                    "syncFrequency": "5s",
                    "fileCheckFrequency": "5s",
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                }
            )
        )
        self._spawn(
            "kubelet",
            [
                str(self.binary),
                "kubelet",
                f"--config={config}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.kubelet_root}",
                f"--hostname-override={self.name}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _kube_proxy(self) -> None:
        config = self.directory / "kube-proxy-config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "mode": "iptables",
                    "clientConnection": {"kubeconfig": str(self.proxy_kubeconfig)},
                    "hostnameOverride": self.name,
                    "bindAddress": NODE_IP,
                    "clusterCIDR": POD_CIDR,
                    "healthzBindAddress": "",
                    "metricsBindAddress": "",
                    # Leave the machine's conntrack table sizes alone.
                    "conntrack": {"maxPerCore": 0, "min": 0},
                    "nodePortAddresses": [f"{NODE_IP}/32"],
                    "iptables": {"syncPeriod": "30s", "minSyncPeriod": "0s"},
                }
            )
        )
        self._spawn("kube-proxy", [str(self.binary), "kube-proxy", f"--config={config}", "--v=1"])

    def _spawn(
        self, component: str, command: list[str], environment: dict[str, str] | None = None
    ) -> None:
        with self.log(component).open("ab") as log:
            self.processes[component] = subprocess.Popen(
                die_with_parent(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment,
            )

    def _alive(self, component: str) -> None:
        process = self.processes[component]
        if process.poll() is not None:
            raise RuntimeError(
                f"{component} exited with {process.returncode}:\n{self._tail(component)}"
            )

    def _tail(self, component: str) -> str:
        path = self.log(component)
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def check(self) -> None:
        """Raise with the component's log if any of the node's processes died."""
        for component in self.processes:
            self._alive(component)

    # -- stop -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything and leave the machine as it was."""
        for component in ("kube-proxy", "kubelet"):
            self._terminate(component)
        self._remove_containers()
        self._terminate("containerd")
        self._kill_shims()
        self._kill_pods()
        self._unmount()
        self._remove_cgroups()
        self._network_down()
        self._remove_log_links()
        MARKER.unlink(missing_ok=True)

    def _terminate(self, component: str) -> None:
        process = self.processes.pop(component, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def _remove_containers(self) -> None:
        """Kill every task containerd runs for this node, so no pod outlives the test run."""
        if not self._ctr_answers():
            return

        def each(*listing: str) -> list[str]:
            return self.ctr(*listing, "ls", "-q").split()

        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            for task in each("tasks"):
                self._ctr_quietly("tasks", "kill", "-s", "SIGKILL", task)
            deadline = time.monotonic() + 10
            while each("tasks") and time.monotonic() < deadline:
                for task in each("tasks"):
                    self._ctr_quietly("tasks", "delete", "-f", task)
                time.sleep(0.2)
            for container in each("containers"):
                self._ctr_quietly("containers", "delete", container)

    def _ctr_quietly(self, *args: str) -> None:
        quietly(*self._ctr, "--namespace", "k8s.io", *args)

    def _kill_shims(self) -> None:
        """containerd leaves its shims running by design (they outlive restarts); ours go."""
        marker = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)

    def _kill_pods(self) -> None:
        """Whatever still runs in the node's cgroups (containerd may have died before it could
        stop its containers): SIGKILL, until the cgroups are empty."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = {
                int(pid)
                for hierarchy in cgroup_roots()
                for root, _, _ in os.walk(hierarchy / self.cgroup_parent.lstrip("/"))
                for pid in _read(Path(root) / "cgroup.procs").split()
            }
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _remove_log_links(self) -> None:
        """The kubelet links every container's log into /var/log/containers; ours go."""
        links = Path("/var/log/containers")
        if not links.is_dir():
            return
        for link in links.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and str(link.readlink()).startswith(str(self.directory)):
                    link.unlink()

    def _unmount(self) -> None:
        prefix = str(self.directory)
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(prefix)
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            quietly("umount", "-l", mount)

    def _remove_cgroups(self) -> None:
        for hierarchy in cgroup_roots():
            top = hierarchy / self.cgroup_parent.lstrip("/")
            if not top.is_dir():
                continue
            for directory in sorted(
                (Path(root) for root, _, _ in os.walk(top)),
                key=lambda p: len(p.parts),
                reverse=True,
            ):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    def _network_down(self) -> None:
        quietly("ip", "link", "del", BRIDGE)
        quietly("ip", "route", "del", "unreachable", TEST_NETWORK)
        quietly("ip", "addr", "del", f"{NODE_IP}/32", "dev", "lo")
        quietly("iptables", "-D", "FORWARD", "-j", FORWARD_CHAIN)
        quietly("iptables", "-F", FORWARD_CHAIN)
        quietly("iptables", "-X", FORWARD_CHAIN)
        for family in ("iptables", "ip6tables"):
            if shutil.which(family):
                remove_chains(family)


def leftovers(node: Node) -> list[str]:
    """What a stopped node left on this machine: empty when its stop() cleaned up."""
    found: list[str] = []
    marker = str(node.directory).encode()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if (
                proc.name.isdigit()
                and int(proc.name) != os.getpid()
                and marker in (proc / "cmdline").read_bytes()
            ):
                found.append(f"process {proc.name}: {(proc / 'comm').read_text().strip()}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"the bridge {BRIDGE}")
    if f"inet {NODE_IP}/32" in run("ip", "addr", "show", "dev", "lo", check=False):
        found.append(f"the address {NODE_IP} on lo")
    for family in ("iptables", "ip6tables"):
        if shutil.which(family):
            for table in ("filter", "nat", "mangle"):
                saved = run(f"{family}-save", "-t", table, check=False)
                chains = [
                    line[1:].split()[0]
                    for line in saved.splitlines()
                    if line.startswith(":")
                    and line[1:].startswith(("KUBE-", "CNI-", FORWARD_CHAIN))
                ]
                found.extend(f"{family} {table} chain {chain}" for chain in chains)
    for hierarchy in cgroup_roots():
        if (hierarchy / node.cgroup_parent.lstrip("/")).exists():
            found.append(f"cgroup {hierarchy / node.cgroup_parent.lstrip('/')}")
    prefix = str(node.directory)
    found.extend(
        f"mount {line.split()[1]}"
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    )
    if MARKER.exists():
        found.append(f"the marker {MARKER}")
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class NodeBusyError(RuntimeError):
    pass


def clean_up_after_an_earlier_run(name: str) -> None:
    """A test run that was killed leaves its node behind (containers, mounts, the bridge);
    the next run removes it before it starts its own."""
    if not MARKER.exists():
        return
    with contextlib.suppress(ValueError, KeyError, OSError):
        left = json.loads(MARKER.read_text())
        owner = int(left.get("owner") or 0)
        if owner and owner != os.getpid() and Path(f"/proc/{owner}").exists():
            # Its address, bridge and chains are this machine's only ones: one node at a time.
            raise NodeBusyError(
                f"a real node already runs on this machine (process {owner}: `make cluster` "
                "or a test run); stop it first"
            )
        marker = str(Path(left["directory"]) / "containerd").encode()
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if (
                    proc.name.isdigit()
                    and f"--hostname-override={left['name']}".encode()
                    in (proc / "cmdline").read_bytes()
                ):
                    os.kill(int(proc.name), signal.SIGKILL)
        stale = Node(
            directory=Path(left["directory"]),
            binary=Path(),
            kubeconfig=Path(),
            proxy_kubeconfig=Path(),
            name=left["name"],
            registry="",
            pause_archive=Path(),
            runtime=containerd.CACHE,
        )
        stale.stop()
    MARKER.unlink(missing_ok=True)


def remove_chains(family: str, prefixes: tuple[str, ...] = ("KUBE-", "CNI-")) -> None:
    """Remove the chains kube-proxy and the kubelet (KUBE-*) and the CNI plugins (CNI-*) added,
    and the rules of the built-in chains that jump to them."""
    for table in ("filter", "nat", "mangle"):
        rules = run(f"{family}-save", "-t", table, check=False).splitlines()
        chains = [line[1:].split()[0] for line in rules if line.startswith(":")]
        ours = [chain for chain in chains if chain.startswith(prefixes)]
        for line in rules:
            if not line.startswith("-A "):
                continue
            words = shlex.split(line)
            if words[1] not in ours and any(word in ours for word in words):
                quietly(family, "-t", table, "-D", *words[1:])
        for chain in ours:
            quietly(family, "-t", table, "-F", chain)
        for chain in ours:
            quietly(family, "-t", table, "-X", chain)
