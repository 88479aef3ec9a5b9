"""A small OCI distribution client: ping, tag → digest, does a digest exist, and the
manifests, blobs and referrers that hold an image's signatures.

Only what verification needs: anonymous, Basic and the Bearer-token flow of quay.io, GHCR and
Docker Hub (a 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, a token fetched
from the realm with the credentials, the request retried with it), over the shared client of
`modelyard.registry.http`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from modelyard.registry.http import (
    MAX_BODY,
    Failure,
    HttpClient,
    RegistryError,
    classify,
    origin,
    read_limited,
    transport,
)

#: Everything a registry may answer a manifest request with: OCI index and manifest, Docker v2
#: manifest list and manifest. Without them a registry may convert, and the digest changes.
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


DIGEST_HEADER = "Docker-Content-Digest"


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


TAGS_PAGE = 100


#: More than any token service's answer (a JWT and a few fields).
MAX_TOKEN_ANSWER = 256 * 2**10


@dataclass
class _Token:
    value: str
    expires: float


@dataclass
class OciClient(HttpClient):
    """One registry, one set of credentials; reuse it, it caches bearer tokens per scope."""

    _tokens: dict[str, _Token] = field(default_factory=dict)

    async def ping(self) -> None:
        """Reachable, TLS trusted, and the credentials accepted (`GET /v2/`)."""
        await self._request("GET", "/v2/", scope=None, ok=(200,))

    async def resolve(self, repository: str, reference: str) -> str | None:
        """The digest a tag (or digest) points to now; None when the registry has no such thing."""
        path = f"/v2/{repository}/manifests/{reference}"
        scope = f"repository:{repository}:pull"
        status, headers, _ = await self._request("HEAD", path, scope=scope, ok=(200, 404))
        if status == 404:
            return None
        digest = headers.get(DIGEST_HEADER)
        if digest:
            return digest
        # Some registries omit the header on HEAD but send it with a GET's answer; some (or a
        # proxy in front of them) send it with neither, and then the manifest as stored is what
        # the digest is the hash of.
        status, headers, body = await self._request("GET", path, scope=scope, ok=(200, 404))
        if status != 200:
            return None
        if headers.get(DIGEST_HEADER):
            return str(headers[DIGEST_HEADER])
        if not _is_manifest(body):
            # A login page or a web UI answering every path: no image was found, and none is
            # to be made up from its hash.
            raise RegistryError(
                Failure.UNREACHABLE,
                f"{self.endpoint.host} answered {path} with something that is not an image "
                "manifest: is the Registry's URL its API?",
            )
        if reference.startswith("sha256:"):
            _check_digest(body, reference, self.endpoint.host)
            return reference
        return "sha256:" + hashlib.sha256(body).hexdigest()

    async def manifest(self, repository: str, reference: str) -> bytes | None:
        """The manifest a tag or digest names, as stored; None when there is none. Asked by
        digest, the bytes must hash to it: a registry cannot hand over another manifest."""
        path = f"/v2/{repository}/manifests/{reference}"
        scope = f"repository:{repository}:pull"
        status, _, body = await self._request("GET", path, scope=scope, ok=(200, 404))
        if status == 404:
            return None
        if reference.startswith("sha256:"):
            _check_digest(body, reference, self.endpoint.host)
        return body

    async def blob(self, repository: str, digest: str, limit: int = MAX_BODY) -> bytes:
        """A blob's bytes, checked against its digest; more than `limit` bytes is an error."""
        path = f"/v2/{repository}/blobs/{digest}"
        scope = f"repository:{repository}:pull"
        _, _, body = await self._request("GET", path, scope=scope, ok=(200,), limit=limit)
        _check_digest(body, digest, self.endpoint.host)
        return body

    async def referrers(self, repository: str, digest: str) -> list[dict[str, Any]]:
        """The descriptors of the manifests that name `digest` as their subject: the OCI 1.1
        referrers API, or, where a registry has none, the `sha256-<hex>` tag clients write
        instead (the referrers tag schema)."""
        scope = f"repository:{repository}:pull"
        status, _, body = await self._request(
            "GET", f"/v2/{repository}/referrers/{digest}", scope=scope, ok=(200, 404)
        )
        if status == 404:
            fallback = await self.manifest(repository, digest.replace(":", "-"))
            if fallback is None:
                return []
            body = fallback
        try:
            index = json.loads(body or b"{}")
        except ValueError:
            return []
        manifests = index.get("manifests") if isinstance(index, dict) else None
        return [entry for entry in manifests or [] if isinstance(entry, dict)]

    async def tags(self, repository: str) -> list[str] | None:
        """Every tag of the repository (following the registry's pages); None when the
        repository does not exist."""
        scope = f"repository:{repository}:pull"
        found: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list?n={TAGS_PAGE}"
        while path:
            status, headers, body = await self._request("GET", path, scope=scope, ok=(200, 404))
            if status == 404:
                return None
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                raise RegistryError(
                    Failure.UNREACHABLE, f"{self.endpoint.host} answered the tag list with no JSON"
                ) from None
            found.extend(str(tag) for tag in payload.get("tags") or [])
            # The next page, as RFC 5988 `Link: </v2/...?last=x&n=y>; rel="next"`.
            link = _NEXT_LINK.search(headers.get("Link", ""))
            path = link.group(1) if link else None
        return found

    async def _request(
        self,
        method: str,
        path: str,
        *,
        scope: str | None,
        ok: tuple[int, ...],
        limit: int = MAX_BODY,
    ) -> tuple[int, dict[str, str], bytes]:
        authorization = self._cached_token(scope)
        for _attempt in range(2):
            status, headers, body = await self._send(method, path, authorization, limit)
            if status in ok:
                return status, headers, body
            if status == 401 and _attempt == 0:
                authorization = await self._authorize(headers.get("WWW-Authenticate", ""), scope)
                continue
            raise classify(status, f"{method} {path}")
        raise RegistryError(Failure.UNAUTHORIZED, "the registry refused the credentials")

    async def _send(
        self, method: str, path: str, authorization: str | None, limit: int = MAX_BODY
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Accept": MANIFEST_TYPES}
        if authorization:
            headers["Authorization"] = authorization
        with transport(self.endpoint):
            return await self.fetch(method, self.endpoint.base + path, headers, limit)

    def _cached_token(self, scope: str | None) -> str | None:
        token = self._tokens.get(scope or "")
        if token and token.expires > time.monotonic():
            return f"Bearer {token.value}"
        return None

    async def _authorize(self, challenge: str, scope: str | None) -> str:
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if self.credentials.anonymous:
                raise RegistryError(
                    Failure.UNAUTHORIZED, "the registry requires credentials and none are set"
                )
            return self.credentials.basic()
        if scheme != "bearer":
            raise RegistryError(
                Failure.UNAUTHORIZED, f"unsupported authentication scheme {scheme!r}"
            )
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise RegistryError(Failure.UNAUTHORIZED, "bearer challenge without a realm")
        query = {
            key: value
            for key, value in (
                ("service", params.get("service")),
                ("scope", scope or params.get("scope")),
            )
            if value
        }
        headers = {} if self.credentials.anonymous else {"Authorization": self.credentials.basic()}
        # The registry names the token service: it is asked only where the policy allows, and
        # gets the credentials only on the registry's own origin or over https.
        await self.permitted(realm)
        if origin(realm) != origin(self.endpoint.base) and not realm.startswith("https://"):
            headers = {}
        try:
            async with self._http().get(
                realm, params=query, headers=headers, allow_redirects=False
            ) as response:
                if response.status in (401, 403):
                    raise RegistryError(
                        Failure.UNAUTHORIZED, "the token service refused the credentials"
                    )
                if response.status != 200:
                    raise classify(response.status, "token request")
                payload = json.loads(await read_limited(response.content, MAX_TOKEN_ANSWER))
                if not isinstance(payload, dict):
                    raise ValueError("not a JSON object")
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise RegistryError(
                Failure.UNREACHABLE, f"token service failed: {type(error).__name__}", temporary=True
            ) from None
        value = payload.get("token") or payload.get("access_token")
        if not value:
            raise RegistryError(Failure.UNAUTHORIZED, "the token service answered without a token")
        lifetime = float(payload.get("expires_in") or 60)
        self._tokens[scope or ""] = _Token(value, time.monotonic() + max(lifetime - 10, 5))
        return f"Bearer {value}"


def _is_manifest(body: bytes) -> bool:
    """Whether `body` reads as an OCI or Docker manifest or index (what a registry stores)."""
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("schemaVersion"), int)


def _check_digest(body: bytes, digest: str, host: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if algorithm != "sha256" or hashlib.sha256(body).hexdigest() != expected:
        raise RegistryError(
            Failure.UNREACHABLE, f"{host} answered {digest} with bytes of another digest"
        )
