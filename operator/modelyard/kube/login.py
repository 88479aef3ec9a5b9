"""Who the operator is on the API, found as kubectl finds it: the pod's service account, else
the kubeconfig (`$KUBECONFIG` or ~/.kube/config), with tokens, client certificates, basic auth
and exec plugins (EKS, GKE, OIDC helpers).

Written here rather than borrowed from the official client: importing that client costs the
operator about 45 MB of memory (kopf imports it too whenever it is installed), which is a
quarter of its budget at 5,000 Models (docs/performance.md).
"""

from __future__ import annotations

import base64
import calendar
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from modelyard.kube.client import Credentials

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: A token file may be rotated under us (bound service-account tokens are): read it again after.
TOKEN_FILE_TTL = 60.0
#: An exec plugin's token is renewed this long before it says it expires.
EXPIRY_MARGIN = 60.0


class LoginError(Exception):
    """No way to reach the API could be found; the message says what was looked for."""


def login() -> Credentials:
    return in_cluster() or from_kubeconfig()


def in_cluster(root: Path | None = None) -> Credentials | None:
    root = root or SERVICE_ACCOUNT
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    token = root / "token"
    if not host or not port or not token.exists():
        return None
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return Credentials(
        server=f"https://{host}:{port}",
        token=token.read_text().strip(),
        ca_path=str(root / "ca.crt") if (root / "ca.crt").exists() else None,
        expires=time.monotonic() + TOKEN_FILE_TTL,
    )


def _kubeconfig_paths() -> list[Path]:
    listed = os.environ.get("KUBECONFIG")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def from_kubeconfig() -> Credentials:
    """The current context of the merged kubeconfigs; the first file to name a thing wins."""
    current: str | None = None
    sections: dict[str, dict[str, tuple[dict[str, Any], Path]]] = {
        "contexts": {},
        "clusters": {},
        "users": {},
    }
    paths = [p for p in _kubeconfig_paths() if p.exists()]
    if not paths:
        raise LoginError(
            "no credentials: not running in a pod, and no kubeconfig "
            f"({os.pathsep.join(map(str, _kubeconfig_paths()))})"
        )
    for path in paths:
        config = yaml.safe_load(path.read_text()) or {}
        current = current or config.get("current-context")
        for section, entries in sections.items():
            singular = section[:-1] if section != "users" else "user"
            for entry in config.get(section) or []:
                entries.setdefault(entry["name"], (entry.get(singular) or {}, path.parent))
    if not current or current not in sections["contexts"]:
        raise LoginError(f"the kubeconfig's current context {current!r} is not defined")
    context, _ = sections["contexts"][current]
    cluster, cluster_dir = sections["clusters"].get(context.get("cluster", ""), ({}, Path()))
    user, user_dir = sections["users"].get(context.get("user", ""), ({}, Path()))
    if not cluster.get("server"):
        raise LoginError(f"context {current!r} names no cluster with a server")

    def file(value: str | None, base: Path) -> str | None:
        return str((base / Path(value).expanduser()).resolve()) if value else None

    def data(value: str | None) -> bytes | None:
        return base64.b64decode(value) if value else None

    token = user.get("token")
    expires = None
    if not token and user.get("tokenFile"):
        token = Path(file(user["tokenFile"], user_dir) or "").read_text().strip()
        expires = time.monotonic() + TOKEN_FILE_TTL
    certificate = data(user.get("client-certificate-data"))
    key = data(user.get("client-key-data"))
    if user.get("exec"):
        issued = run_exec_plugin(user["exec"], cluster)
        token = issued.get("token") or token
        if issued.get("clientCertificateData"):
            certificate = issued["clientCertificateData"].encode()
            key = issued.get("clientKeyData", "").encode()
        if issued.get("expirationTimestamp"):
            stamp = time.strptime(issued["expirationTimestamp"][:19], "%Y-%m-%dT%H:%M:%S")
            remaining = calendar.timegm(stamp) - time.time() - EXPIRY_MARGIN
            expires = time.monotonic() + max(remaining, 0.0)
    return Credentials(
        server=cluster["server"],
        token=token,
        username=user.get("username"),
        password=user.get("password"),
        ca_path=file(cluster.get("certificate-authority"), cluster_dir),
        ca_data=data(cluster.get("certificate-authority-data")),
        certificate_path=file(user.get("client-certificate"), user_dir),
        certificate_data=certificate,
        private_key_path=file(user.get("client-key"), user_dir),
        private_key_data=key,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        expires=expires,
    )


def run_exec_plugin(plugin: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    """Run a client-go credential plugin; its ExecCredential's status (token or certificate)."""
    command = [plugin["command"], *(plugin.get("args") or [])]
    environment = dict(os.environ)
    environment.update({e["name"]: e["value"] for e in plugin.get("env") or []})
    request = {
        "apiVersion": plugin.get("apiVersion", "client.authentication.k8s.io/v1"),
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }
    if plugin.get("provideClusterInfo"):
        request["spec"]["cluster"] = {"server": cluster.get("server")}
    environment["KUBERNETES_EXEC_INFO"] = json.dumps(request)
    try:
        finished = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LoginError(f"credential plugin {plugin['command']!r}: {error}") from None
    if finished.returncode != 0:
        last = (finished.stderr.strip().splitlines() or [""])[-1]
        raise LoginError(
            f"credential plugin {plugin['command']!r} exited {finished.returncode}: {last}"
        )
    try:
        status: dict[str, Any] = json.loads(finished.stdout).get("status") or {}
    except (ValueError, AttributeError):
        raise LoginError(
            f"credential plugin {plugin['command']!r} printed no ExecCredential"
        ) from None
    return status
