"""Who the operator is on the API, found as kubectl finds it: the pod's service account, else
the kubeconfig (`$KUBECONFIG`, merged, or ~/.kube/config) — tokens and token files, client
certificates, basic auth, exec plugins (EKS, GKE, OIDC helpers) and the OIDC and GCP auth
providers, with their refresh.

Reading those is left to `kubernetes_asyncio`'s loaders, maintained beside the official client:
how credentials are found is security-sensitive and full of cases (exec plugin protocol
versions, refresh tokens, relative paths, inline data) that one project should not keep alone.
The rest of that library is not used: its generated client takes 2.3 times our client's CPU for
the same requests (docs/performance.md). The loaders are imported on the first login, and
importing them brings the generated client in with them (about 38 MB): the price of not
writing credential handling here.

The loaders' answer is reduced to `Credentials`, what our client needs: the server, TLS
material, the Authorization header, and when to log in again. `Credentials` also builds the TLS
context from that material, so the client never handles certificate files itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: A token file may be rotated under us (bound service-account tokens are): read it again after
#: this long, as client-go does.
TOKEN_FILE_TTL = 60.0
#: An exec plugin's token is renewed this long before it says it expires.
EXPIRY_MARGIN = 60.0


@dataclass(frozen=True)
class Credentials:
    """Where the API is and who we are there, as `login()` found them."""

    server: str
    token: str | None = None
    #: Another Authorization header than a bearer token (basic auth), whole.
    authorization: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    certificate_path: str | None = None
    certificate_data: bytes | None = None
    private_key_path: str | None = None
    private_key_data: bytes | None = None
    insecure: bool = False
    #: When to log in again (time.monotonic()), for a rotated token file or an expiring token.
    expires: float | None = field(default=None, compare=False)

    def tls_identity(self) -> tuple[Any, ...]:
        """What a connection pool is bound to; a new token alone does not change it."""
        return (
            self.server,
            self.ca_path,
            self.ca_data,
            self.certificate_path,
            self.certificate_data,
            self.private_key_path,
            self.private_key_data,
            self.insecure,
        )

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.authorization:
            return {"Authorization": self.authorization}
        return {}

    def ssl_context(self) -> ssl.SSLContext | bool:
        """A new context each time (the caller may change it); False, no TLS, for http."""
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(
            cafile=self.ca_path, cadata=self.ca_data.decode() if self.ca_data else None
        )
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certificate_path or self.certificate_data:
            with _as_files(
                (self.certificate_path, self.certificate_data),
                (self.private_key_path, self.private_key_data),
            ) as (certificate, key):
                context.load_cert_chain(certificate, key)
        return context

    def __repr__(self) -> str:  # never a token or a key in a log line
        return f"Credentials(server={self.server!r})"


@contextlib.contextmanager
def _as_files(*items: tuple[str | None, bytes | None]) -> Any:
    """ssl loads client certificates from files only: certificates given as data are written to
    private temporary files for the moment it takes. (`login()` always gives paths — the
    loaders write a kubeconfig's inline data to files themselves — so only Credentials made by
    hand carry data.)"""
    paths: list[str | None] = []
    created: list[str] = []
    try:
        for given, data in items:
            if given or data is None:
                paths.append(given)
                continue
            handle, name = tempfile.mkstemp(prefix="modelyard-")
            created.append(name)
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            paths.append(name)
        yield paths
    finally:
        for name in created:
            with contextlib.suppress(OSError):
                os.unlink(name)


class LoginError(Exception):
    """No way to reach the API could be found; the message says what was looked for."""


def login() -> Credentials:
    """Blocking (an exec plugin may run, files are read): the client calls it in a thread.
    Called from a coroutine, it takes a thread of its own for the loaders' event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_login())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(_login())).result()


async def _login() -> Credentials:
    # Imported here: only a process that talks to the API pays for the library.
    from kubernetes_asyncio.client.configuration import Configuration  # noqa: PLC0415
    from kubernetes_asyncio.config import ConfigException  # noqa: PLC0415

    configuration = Configuration()
    in_cluster = _in_cluster()
    try:
        if in_cluster:
            return _in_pod(configuration)
        return await _from_kubeconfig(configuration)
    except ConfigException as error:
        source = f"the service account in {SERVICE_ACCOUNT}" if in_cluster else "the kubeconfig"
        raise LoginError(f"{source}: {error}") from None


def _in_cluster() -> bool:
    return bool(
        os.environ.get("KUBERNETES_SERVICE_HOST")
        and os.environ.get("KUBERNETES_SERVICE_PORT")
        and (SERVICE_ACCOUNT / "token").exists()
    )


def _in_pod(configuration: Any) -> Credentials:
    from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader  # noqa: PLC0415

    InClusterConfigLoader(
        token_filename=str(SERVICE_ACCOUNT / "token"),
        cert_filename=str(SERVICE_ACCOUNT / "ca.crt"),
        try_refresh_token=False,
    ).load_and_set(configuration)
    return _credentials(configuration, expires=time.monotonic() + TOKEN_FILE_TTL)


def _kubeconfig_paths() -> list[Path]:
    listed = os.environ.get("KUBECONFIG")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


async def _from_kubeconfig(configuration: Any) -> Credentials:
    from kubernetes_asyncio.config import kube_config  # noqa: PLC0415

    paths = [p for p in _kubeconfig_paths() if p.exists()]
    if not paths:
        raise LoginError(
            "no credentials: not running in a pod, and no kubeconfig "
            f"({os.pathsep.join(map(str, _kubeconfig_paths()))})"
        )
    where = os.pathsep.join(map(str, paths))
    try:
        loader = await kube_config.load_kube_config(
            config_file=where, client_configuration=configuration, persist_config=False
        )
    except (AssertionError, KeyError, TypeError, ValueError, OSError) as error:
        # The loader asserts what it expects rather than saying it: a context, a cluster.
        detail = str(error) or "it names no current context, cluster or server"
        raise LoginError(f"the kubeconfig ({where}) cannot be used: {detail}") from None
    if not getattr(configuration, "host", None) or configuration.host == "http://localhost":
        raise LoginError(f"the kubeconfig's current context names no server ({where})")
    expiry = getattr(loader, "exec_plugin_expiry", None)
    expires = None
    if isinstance(expiry, datetime.datetime):
        remaining = expiry.timestamp() - time.time() - EXPIRY_MARGIN
        expires = time.monotonic() + max(remaining, 0.0)
    return _credentials(configuration, expires)


def _credentials(configuration: Any, expires: float | None) -> Credentials:
    header = str(configuration.api_key.get("BearerToken") or "").strip()
    scheme, _, value = header.partition(" ")
    bearer = scheme.lower() == "bearer"
    return Credentials(
        server=str(configuration.host),
        token=value.strip() if bearer else None,
        authorization=header if header and not bearer else None,
        ca_path=configuration.ssl_ca_cert or None,
        certificate_path=configuration.cert_file or None,
        private_key_path=configuration.key_file or None,
        insecure=not configuration.verify_ssl,
        expires=expires,
    )
