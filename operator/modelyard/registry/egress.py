"""Where the operator may send a request whose URL a user chose: an external Model's URL, a
Registry's (OCI or MLflow), and wherever those send it on — redirects and token services.

The operator sits inside the cluster with its own network position and credentials; a user
who could make it ask any URL and report reachability, status and the answer's shape
would have an oracle into everything the operator reaches (cloud metadata, the API server, the
operator's own pod). Each of those requests is checked here twice: the URL before it is asked
(a clear reason in the status), and each address at the moment of connecting (an aiohttp
resolver), so a name that resolves elsewhere later (DNS rebinding) gets nowhere either.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from modelyard.config import ExternalModels

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class NotPermitted(Exception):  # noqa: N818 -- a verdict, carried to the status
    """The URL or an address it resolves to is outside the operator's egress policy."""


def _networks(cidrs: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


#: NAT64's well-known prefix (RFC 6052): the IPv4 address is the last 32 bits.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: NAT64's local-use prefix (RFC 8215), whose embedding depends on the operator's prefix length:
#: judged as the IPv4 range it may reach, which is every range.
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
#: IPv4-compatible addresses (RFC 4291, deprecated): ::a.b.c.d.
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _as_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries — mapped, compatible, 6to4, NAT64, Teredo's
    server — which is where a packet to it ends up: judged as that address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[0]
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass
class EgressPolicy:
    """The configured policy plus the API server's own endpoints, which are never allowed."""

    config: ExternalModels = field(default_factory=ExternalModels)
    #: (host, port) pairs of the cluster's API server: its URL from the operator's login,
    #: and the `kubernetes` Service as pods see it. The host is refused on every port: the
    #: machine that serves the API serves the kubelet, etcd and the controllers beside it. A
    #: loopback host is the exception (an operator run beside a local cluster, or through a
    #: local proxy): its port alone is refused, and loopback as a whole is `deniedCIDRs`'s to
    #: decide (denied by default).
    api_servers: set[tuple[str, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._allowed = _networks(self.config.allowed_cidrs)
        self._denied = _networks(self.config.denied_cidrs)
        self._denied_hosts = {h.lower().rstrip(".") for h in self.config.denied_hosts}
        self._denied_hosts |= {
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        }
        self._api_hosts: set[str] = set()
        self._api_addresses: set[Address] = set()
        self._api_ports: set[tuple[str, int]] = set()
        for given, port in self.api_servers:
            host = given.lower().strip("[]").rstrip(".")
            literal = _address(host)
            if host == "localhost" or (literal is not None and _normal(literal).is_loopback):
                self._api_ports.add((str(_normal(literal)) if literal else host, port))
            elif literal is not None:
                self._api_addresses.add(_normal(literal))
            else:
                self._api_hosts.add(host)

    def check_url(self, url: str) -> None:
        """Everything decidable without resolving: scheme, host name, a literal address."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in [s.lower() for s in self.config.allowed_schemes]:
            raise NotPermitted(
                f"scheme {scheme or '(none)'} is not among the allowed schemes "
                f"({', '.join(self.config.allowed_schemes)})"
            )
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port or (443 if scheme == "https" else 80)
        if not host:
            raise NotPermitted("the URL has no host")
        if host in self._denied_hosts:
            raise NotPermitted(f"host {host} is denied (cloud metadata or the cluster's API)")
        if host.strip("[]") in self._api_hosts or (host, port) in self._api_ports:
            raise NotPermitted(f"{host} is the cluster's API server")
        literal = _address(host)
        if (
            literal is None
            and self.config.allowed_hosts
            and not any(fnmatch.fnmatch(host, p.lower()) for p in self.config.allowed_hosts)
        ):
            raise NotPermitted(
                f"host {host} matches none of the allowed hosts "
                f"({', '.join(self.config.allowed_hosts)})"
            )
        if literal is not None:
            self.check_address(literal, port, host)

    def check_address(self, address: Address, port: int, host: str) -> None:
        """`port` is not a way around it: every rule is about where the packet goes."""
        address = _normal(address)
        if address in self._api_addresses or (str(address), port) in self._api_ports:
            raise NotPermitted(f"{host} is {address}, the cluster's API server")
        if isinstance(address, ipaddress.IPv6Address) and address in NAT64_LOCAL:
            raise NotPermitted(f"{host} is {address}, a NAT64 address whose IPv4 cannot be told")
        for network in self._denied:
            if address.version == network.version and address in network:
                raise NotPermitted(f"{host} is {address}, in denied range {network}")
        if self._allowed and not any(
            address.version == n.version and address in n for n in self._allowed
        ):
            raise NotPermitted(
                f"{host} is {address}, outside the allowed ranges "
                f"({', '.join(self.config.allowed_cidrs)})"
            )

    async def check(self, url: str) -> None:
        """The URL and every address its host resolves to now."""
        self.check_url(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        if _address(host) is not None:
            return
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError:
            return  # unresolvable: the request itself will say Unreachable
        for *_, sockaddr in found:
            address = _address(str(sockaddr[0]))
            if address is not None:
                self.check_address(address, port, host)

    def resolver(self) -> AbstractResolver:
        return _CheckingResolver(self)


class _CheckingResolver(AbstractResolver):
    """The default resolver, refusing every address the policy denies."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        for entry in found:
            address = _address(str(entry["host"]))
            if address is not None:
                try:
                    self.policy.check_address(address, port, host)
                except NotPermitted as refusal:
                    raise OSError(str(refusal)) from None
        return found

    async def close(self) -> None:
        await self.inner.close()


def _normal(address: Address) -> Address:
    return _as_ipv4(address) or address


async def with_addresses(endpoints: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """The endpoints and the addresses their names resolve to now: a URL naming the API
    server by one of its addresses, or by another name, is refused too."""
    found = set(endpoints)
    loop = asyncio.get_running_loop()
    for host, port in endpoints:
        if _address(host) is not None:
            continue
        with contextlib.suppress(OSError):
            for *_, sockaddr in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
                found.add((str(sockaddr[0]), port))
    return found


def api_server_endpoints(
    server_url: str | None, environment: dict[str, Any]
) -> set[tuple[str, int]]:
    """The API server as the operator reaches it and as pods see it (`kubernetes` Service)."""
    found: set[tuple[str, int]] = set()
    if server_url:
        parts = urlsplit(server_url)
        if parts.hostname:
            found.add((parts.hostname.lower(), parts.port or 443))
    host = environment.get("KUBERNETES_SERVICE_HOST")
    if host:
        found.add((str(host).lower(), int(environment.get("KUBERNETES_SERVICE_PORT") or 443)))
    return found


__all__ = ["EgressPolicy", "NotPermitted", "api_server_endpoints", "with_addresses"]
