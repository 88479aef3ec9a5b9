"""The egress policy for external Models, as a cluster admin configures it."""

from __future__ import annotations

import re

import pytest

from modelyard.config import ExternalModels
from modelyard.registry.egress import EgressPolicy, NotPermitted, api_server_endpoints

API = api_server_endpoints(
    "https://10.0.0.1:6443",
    {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.0.0/16"),
        ("http://[::ffff:169.254.169.254]/", "169.254.0.0/16"),
        ("http://127.0.0.1:8000/metrics", "127.0.0.0/8"),
        ("http://metadata.google.internal/", "cloud metadata"),
        ("https://kubernetes.default.svc/api", "cluster's API"),
        ("https://10.96.0.1/api", "API server"),
        ("https://10.0.0.1:6443/api", "API server"),
        # The API server's machine on another port: the kubelet, etcd, the controllers.
        ("https://10.0.0.1:10250/pods", "API server"),
        ("http://10.96.0.1:2379/", "API server"),
        # IPv6 forms that carry an IPv4 address go where that address goes.
        ("http://[::a9fe:a9fe]/", "169.254.0.0/16"),  # IPv4-compatible
        ("http://[2002:a9fe:a9fe::1]/", "169.254.0.0/16"),  # 6to4
        ("http://[64:ff9b::a9fe:a9fe]/", "169.254.0.0/16"),  # NAT64, well-known prefix
        ("http://[64:ff9b:1::a9fe:a9fe]/", "NAT64"),  # NAT64, local-use prefix
        ("http://[2001:0:a00:1::1]/", "API server"),  # Teredo, its server 10.0.0.1
        ("http://[::ffff:10.0.0.1]:8080/", "API server"),
        ("http://[::ffff:7f00:1]/", "127.0.0.0/8"),
        ("gopher://models.example.com/", "scheme gopher"),
    ],
)
async def test_the_default_policy_refuses(url: str, why: str) -> None:
    with pytest.raises(NotPermitted, match=re.escape(why)):
        await EgressPolicy(ExternalModels(), API).check(url)


async def test_a_name_is_judged_by_what_it_resolves_to() -> None:
    with pytest.raises(NotPermitted, match=re.escape("localhost is 127.0.0.1")):
        await EgressPolicy(ExternalModels(), API).check("http://localhost:9/")


async def test_the_default_policy_allows_a_public_model_server() -> None:
    await EgressPolicy(ExternalModels(), API).check("https://203.0.113.7/v1")
    await EgressPolicy(ExternalModels(), API).check("https://[2001:db8::7]/v1")


async def test_an_api_server_on_loopback_is_refused_on_its_port_only() -> None:
    """A local cluster (or a local proxy to one): loopback as a whole is deniedCIDRs's to
    decide; with loopback allowed, the API server's own port stays refused."""
    local = api_server_endpoints("https://127.0.0.1:6443", {})
    allowed = ExternalModels(deniedCIDRs=["169.254.0.0/16"])
    await EgressPolicy(allowed, local).check("http://127.0.0.1:8080/v1")
    for url in ("https://127.0.0.1:6443/api", "https://[::ffff:127.0.0.1]:6443/api"):
        with pytest.raises(NotPermitted, match="API server"):
            await EgressPolicy(allowed, local).check(url)
    with pytest.raises(NotPermitted, match=re.escape("127.0.0.0/8")):
        await EgressPolicy(ExternalModels(), local).check("http://127.0.0.1:8080/v1")


async def test_allow_lists_narrow_it() -> None:
    policy = EgressPolicy(
        ExternalModels(
            allowedSchemes=["https"],
            allowedHosts=["*.models.example.com"],
            allowedCIDRs=["203.0.113.0/24"],
        ),
        API,
    )
    await policy.check("https://203.0.113.7/v1")
    with pytest.raises(NotPermitted, match="scheme http "):
        await policy.check("http://203.0.113.7/v1")
    with pytest.raises(NotPermitted, match="outside the allowed ranges"):
        await policy.check("https://198.51.100.1/v1")
    with pytest.raises(NotPermitted, match="matches none of the allowed hosts"):
        await policy.check("https://api.elsewhere.example.org/v1")
