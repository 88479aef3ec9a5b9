"""Digest verification against a real OCI registry on loopback (plain HTTP, and TLS + basic auth),
a slow registry, a registry that goes away and comes back, and the Bearer-token flow."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from modelyard.registry import credentials as creds
from modelyard.registry.http import Credentials, Endpoint, RegistryError
from modelyard.registry.oci import OciClient
from modelyard.registry.verify import verify
from support.registry import LocalRegistry, free_port, require_tools

UNKNOWN = "sha256:" + "0" * 64


@pytest.fixture
async def plain(tmp_path: Path) -> AsyncIterator[LocalRegistry]:
    require_tools()
    registry = await LocalRegistry(tmp_path / "plain").start()
    yield registry
    await registry.stop()


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[LocalRegistry]:
    require_tools()
    registry = await LocalRegistry(
        tmp_path / "secured", tls=True, auth=("robot", "s3cret-Pa55")
    ).start()
    yield registry
    await registry.stop()


def client(registry: LocalRegistry, **changes: Any) -> OciClient:
    ca = changes.pop("ca", registry.ca_pem if registry.tls else None)
    credentials = changes.pop(
        "credentials", Credentials(*registry.auth) if registry.auth else Credentials()
    )
    return OciClient(
        Endpoint(registry.url, ca, changes.pop("insecure", False), changes.pop("timeout", 5)),
        credentials,
    )


async def test_tag_resolves_to_the_digest_skopeo_pushed(plain: LocalRegistry) -> None:
    digest = plain.push("team/reranker", "1.0.0", "weights v1")
    async with client(plain) as registry:
        await registry.ping()
        assert await registry.resolve("team/reranker", "1.0.0") == digest
        assert await registry.resolve("team/reranker", digest) == digest
        assert await registry.resolve("team/reranker", "9.9.9") is None
        result = await verify(registry, "team/reranker", digest, "1.0.0")
    assert result.verified and result.tag_digest == digest


async def test_mismatch_names_both_digests(plain: LocalRegistry) -> None:
    first = plain.push("team/reranker", "1.0.0", "weights v1")
    second = plain.push("team/reranker", "1.1.0", "weights v2")
    async with client(plain) as registry:
        result = await verify(registry, "team/reranker", first, "1.1.0")
    assert result.reason == "DigestMismatch"
    assert first in result.message and second in result.message


async def test_missing_digest_is_not_found(plain: LocalRegistry) -> None:
    plain.push("team/reranker", "1.0.0", "weights v1")
    async with client(plain) as registry:
        result = await verify(registry, "team/reranker", UNKNOWN, None)
        missing_repo = await verify(registry, "team/nothing-here", UNKNOWN, "1.0.0")
    assert result.reason == "DigestNotFound" and UNKNOWN in result.message
    assert missing_repo.reason == "DigestNotFound"


async def test_moved_tag_is_seen(plain: LocalRegistry) -> None:
    published = plain.push("team/reranker", "stable", "weights v1")
    async with client(plain) as registry:
        assert (await verify(registry, "team/reranker", published, "stable")).verified
        moved = plain.push("team/reranker", "stable", "weights v2, pushed over the tag")
        result = await verify(registry, "team/reranker", published, "stable")
    assert result.reason == "DigestMismatch"
    assert result.tag_digest == moved != published


async def test_tls_with_basic_auth(secured: LocalRegistry) -> None:
    digest = secured.push("acme/awesome-llm", "1.1.0", "llm weights")
    async with client(secured) as registry:
        await registry.ping()
        assert (await verify(registry, "acme/awesome-llm", digest, "1.1.0")).verified
    async with client(secured, credentials=Credentials("robot", "wrong")) as registry:
        with pytest.raises(RegistryError) as refused:
            await registry.ping()
        assert refused.value.reason == "Unauthorized"
        assert "wrong" not in str(refused.value)
        result = await verify(registry, "acme/awesome-llm", digest, "1.1.0")
        assert result.reason == "Unauthorized" and not result.temporary
    async with client(secured, credentials=Credentials()) as registry:
        with pytest.raises(RegistryError) as anonymous:
            await registry.ping()
        assert anonymous.value.reason == "Unauthorized"


async def test_untrusted_certificate_is_a_tls_error_unless_told_otherwise(
    secured: LocalRegistry,
) -> None:
    async with client(secured, ca=None) as registry:
        with pytest.raises(RegistryError) as untrusted:
            await registry.ping()
        assert untrusted.value.reason == "TLSError"
    async with client(secured, ca=None, insecure=True) as registry:
        await registry.ping()


async def test_registry_stopped_mid_way_then_restarted(plain: LocalRegistry) -> None:
    digest = plain.push("team/reranker", "1.0.0", "weights v1")
    async with client(plain, timeout=2) as registry:
        assert (await verify(registry, "team/reranker", digest, "1.0.0")).verified
        await plain.stop()
        down = await verify(registry, "team/reranker", digest, "1.0.0")
        assert down.reason == "Unreachable" and down.temporary
        await plain.start()
        assert (await verify(registry, "team/reranker", digest, "1.0.0")).verified


@contextlib.asynccontextmanager
async def front(
    handler: Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.StreamResponse]],
) -> AsyncIterator[str]:
    """An HTTP server on loopback answering every path with `handler`; its URL."""
    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_slow_registry_times_out_as_temporary(plain: LocalRegistry) -> None:
    """A proxy that answers after 3 s in front of the registry; the client gives up after 1 s."""
    digest = plain.push("team/reranker", "1.0.0", "weights v1")

    async def slow(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        await asyncio.sleep(3)
        return aiohttp.web.Response(status=200)

    async with front(slow) as url, OciClient(Endpoint(url, timeout=1)) as registry:
        result = await verify(registry, "team/reranker", digest, "1.0.0")
    assert result.reason == "Unreachable" and result.temporary
    assert "did not answer within 1 s" in result.message


async def test_a_registry_that_never_names_the_digest_is_hashed(plain: LocalRegistry) -> None:
    """A registry (or a proxy in front of it) that sends no Docker-Content-Digest on HEAD nor
    on GET: the tag still resolves, to the hash of the manifest as stored, and a version pinned
    to the right digest verifies instead of being reported missing."""
    digest = plain.push("team/reranker", "1.0.0", "weights v1")

    async def without_digest(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, f"{plain.url}{request.rel_url}", headers=request.headers
            ) as answer,
        ):
            body = await answer.read()
            headers = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() in ("content-type", "www-authenticate")
            }
            return aiohttp.web.Response(status=answer.status, body=body, headers=headers)

    async with front(without_digest) as url, OciClient(Endpoint(url)) as registry:
        assert await registry.resolve("team/reranker", "1.0.0") == digest
        assert (await verify(registry, "team/reranker", digest, "1.0.0")).verified
        assert await registry.resolve("team/reranker", "2.0.0") is None

    async def login_page(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="<html>Sign in</html>", content_type="text/html")

    # Something that answers every path without a digest is not taken for a registry holding
    # whatever is asked: no digest is made up from the hash of its page.
    async with front(login_page) as url, OciClient(Endpoint(url)) as registry:
        result = await verify(registry, "team/reranker", digest, None)
    assert not result.verified and result.reason == "Unreachable", result
    assert "not an image manifest" in result.message


class TokenRegistry:
    """A registry front that demands Bearer tokens from its own token service, as quay.io does."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.token_requests: list[dict[str, str]] = []
        self.port = free_port()
        self.runner: aiohttp.web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def token(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.token_requests.append(dict(request.query))
        expected = "Basic " + base64.b64encode(b"robot:tok3n").decode()
        if request.headers.get("Authorization") != expected:
            return aiohttp.web.Response(status=401)
        scope = request.query.get("scope", "")
        return aiohttp.web.json_response({"token": f"granted:{scope}", "expires_in": 300})

    async def registry(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        repository = request.match_info.get("repository", "")
        scope = f"repository:{repository}:pull" if repository else ""
        if request.headers.get("Authorization") != f"Bearer granted:{scope}":
            challenge = f'Bearer realm="{self.url}/token",service="test-registry"'
            if scope:
                challenge += f',scope="{scope}"'
            return aiohttp.web.Response(status=401, headers={"WWW-Authenticate": challenge})
        if not repository:
            return aiohttp.web.Response(status=200)  # GET /v2/: the API answers
        if request.match_info.get("reference") in (self.digest, "1.0.0"):
            return aiohttp.web.Response(status=200, headers={"Docker-Content-Digest": self.digest})
        return aiohttp.web.Response(status=404)

    async def __aenter__(self) -> TokenRegistry:
        app = aiohttp.web.Application()
        app.router.add_get("/token", self.token)
        app.router.add_get("/v2/", self.registry)
        app.router.add_route("*", "/v2/{repository:.+}/manifests/{reference}", self.registry)
        self.runner = aiohttp.web.AppRunner(app)
        await self.runner.setup()
        await aiohttp.web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: Any) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_bearer_token_flow_with_scope_and_cached_token() -> None:
    digest = "sha256:" + "ab" * 32
    async with TokenRegistry(digest) as fake:
        async with OciClient(Endpoint(fake.url), Credentials("robot", "tok3n")) as registry:
            await registry.ping()
            assert (await verify(registry, "acme/awesome-llm", digest, "1.0.0")).verified
            assert (await verify(registry, "acme/awesome-llm", digest, "1.0.0")).verified
        scopes = [r.get("scope") for r in fake.token_requests]
        assert scopes == [None, "repository:acme/awesome-llm:pull"], (
            "one token per scope, then cached"
        )
        assert all(r.get("service") == "test-registry" for r in fake.token_requests)
        async with OciClient(Endpoint(fake.url), Credentials("robot", "nope")) as registry:
            result = await verify(registry, "acme/awesome-llm", digest, "1.0.0")
        assert result.reason == "Unauthorized" and "nope" not in result.message


# -- credentials from Secrets -----------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def docker_secret(auths: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": b64(json.dumps({"auths": auths}))},
    }


@pytest.mark.parametrize(
    ("secret", "host", "expected"),
    [
        (
            docker_secret({"quay.io": {"auth": b64("acme+robot:T0KEN")}}),
            "quay.io",
            ("acme+robot", "T0KEN"),
        ),
        (
            docker_secret({"https://quay.io": {"username": "u", "password": "p"}}),
            "quay.io",
            ("u", "p"),
        ),
        (
            docker_secret({"https://index.docker.io/v1/": {"auth": b64("me:pw")}}),
            "registry-1.docker.io",
            ("me", "pw"),
        ),
        (
            {
                "metadata": {"name": "b"},
                "type": "kubernetes.io/basic-auth",
                "data": {"username": b64("robot"), "password": b64("pw")},
            },
            "h",
            ("robot", "pw"),
        ),
        (
            {"metadata": {"name": "t"}, "type": "Opaque", "stringData": {"token": "ghp_x"}},
            "ghcr.io",
            ("token", "ghp_x"),
        ),
    ],
)
def test_credentials_from_each_secret_shape(
    secret: dict[str, Any], host: str, expected: tuple[str, str]
) -> None:
    credentials = creds.from_secret(secret, host)
    assert (credentials.username, credentials.password) == expected
    assert "ghp_x" not in repr(credentials) and "T0KEN" not in repr(credentials)


@pytest.mark.parametrize(
    ("secret", "fragment"),
    [
        (
            {"metadata": {"name": "x"}, "type": "Opaque", "data": {"password": b64("p")}},
            "none of the expected keys",
        ),
        (
            {
                "metadata": {"name": "x"},
                "type": "kubernetes.io/basic-auth",
                "data": {"username": b64("u")},
            },
            "username and password",
        ),
        (docker_secret({"ghcr.io": {"auth": b64("u:p")}}), "no credentials for quay.io"),
        (
            {"metadata": {"name": "x"}, "type": "kubernetes.io/dockerconfigjson", "data": {}},
            ".dockerconfigjson",
        ),
    ],
)
def test_secret_without_the_expected_key_is_explained(
    secret: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(creds.SecretInvalid) as invalid:
        creds.from_secret(secret, "quay.io")
    assert fragment in str(invalid.value)
