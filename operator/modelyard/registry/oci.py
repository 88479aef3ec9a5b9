"""A small OCI distribution client: ping, tag → digest, does a digest exist, and the
manifests, blobs and referrers that hold an image's signatures.

Only what verification needs, over aiohttp (kopf's own HTTP library, so nothing new to install):
anonymous, Basic and the Bearer-token flow of quay.io, GHCR and Docker Hub (a 401 with
`WWW-Authenticate: Bearer realm=…,service=…,scope=…`, a token fetched from the realm with the
credentials, the request retried with it); a private CA or no verification at all; and
failures classified into the reasons a Registry's or ModelVersion's status can show.

Credentials never appear in an error message, a log line or anything returned.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urljoin, urlsplit

import aiohttp

from modelyard.registry.egress import EgressPolicy, NotPermitted

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
#: More than any manifest, signature or tag page; a larger answer is refused once one byte
#: past this has been read, never read whole.
MAX_BODY = 4 * 2**20
#: More than any token service's answer (a JWT and a few fields).
MAX_TOKEN_ANSWER = 256 * 2**10


class Failure:
    """Why a registry call failed, spelt as the condition reason it becomes."""

    UNAUTHORIZED = "Unauthorized"
    TLS_ERROR = "TLSError"
    UNREACHABLE = "Unreachable"
    #: A model server sent the operator to another origin, which it does not follow.
    REDIRECTED = "RedirectRefused"
    #: The URL, a redirect or a token service is outside the egress policy: never asked.
    NOT_PERMITTED = "EndpointNotPermitted"


class RegistryError(Exception):
    """A failed registry call, with the status reason it means and whether a retry may help."""

    def __init__(self, reason: str, message: str, *, temporary: bool = False) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.temporary = temporary


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    #: A bearer token presented as such (MLflow, Databricks); OCI registries take tokens as a
    #: password instead.
    token: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.username is None and self.password is None and self.token is None

    def basic(self) -> str:
        raw = f"{self.username or ''}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:  # never show the secret, even in a debugger or a traceback
        return (
            f"Credentials(username={self.username!r}, password={'***' if self.password else None}"
            f", token={'***' if self.token else None})"
        )


@dataclass(frozen=True)
class Endpoint:
    url: str
    ca_pem: str | None = None
    insecure_skip_verify: bool = False
    timeout: float = 10.0

    @property
    def base(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc


def ssl_context(endpoint: Endpoint) -> ssl.SSLContext | bool:
    if not endpoint.base.startswith("https://"):
        return False
    if endpoint.insecure_skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if endpoint.ca_pem:
        return ssl.create_default_context(cadata=endpoint.ca_pem)
    return True


@dataclass
class _Token:
    value: str
    expires: float


@dataclass
class HttpClient:
    """One endpoint, one set of credentials, one connection pool opened on first use; the OCI
    and MLflow clients share this."""

    endpoint: Endpoint
    credentials: Credentials = field(default_factory=Credentials)
    #: Where requests may go (`modelyard.registry.egress`): the OCI and MLflow clients check
    #: every URL they ask — the endpoint, each redirect, a token service — before asking it;
    #: a ModelEndpoint's caller checks its URL, and it follows redirects only within that
    #: origin. Every address is checked again when connecting. None: anywhere (the CLI, run
    #: by a user for themselves).
    egress: EgressPolicy | None = None
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.endpoint.timeout),
                connector=aiohttp.TCPConnector(
                    ssl=ssl_context(self.endpoint),
                    resolver=self.egress.resolver() if self.egress is not None else None,
                ),
            )
        return self._session

    async def permitted(self, url: str) -> None:
        """Raises unless the egress policy lets `url` be asked (the reason says which rule)."""
        if self.egress is None:
            return
        try:
            await self.egress.check(url)
        except NotPermitted as refusal:
            raise RegistryError(Failure.NOT_PERMITTED, str(refusal)) from None

    async def fetch(
        self, method: str, url: str, headers: dict[str, str], limit: int = MAX_BODY
    ) -> tuple[int, dict[str, str], bytes]:
        """One request, redirects followed by hand (at most MAX_REDIRECTS): each target is
        checked against the egress policy first, and credentials go only to the origin they
        were given for. Registries send blob downloads to storage elsewhere; aiohttp would
        follow a redirect to any address, and literal addresses skip its resolver."""
        for _hop in range(MAX_REDIRECTS + 1):
            await self.permitted(url)
            async with self._http().request(
                method, url, headers=headers, allow_redirects=False
            ) as response:
                location = response.headers.get("Location")
                if response.status in REDIRECTS and location:
                    target = urljoin(url, location)
                    if _origin(target) != _origin(url):
                        headers = {k: v for k, v in headers.items() if k != "Authorization"}
                    url = target
                    continue
                body = await read_limited(response.content, limit) if method == "GET" else b""
                if len(body) > limit:
                    raise RegistryError(
                        Failure.UNREACHABLE,
                        f"{self.endpoint.host} answered {method} {_path(url)} with more than "
                        f"{limit // 2**10} KiB",
                    )
                return response.status, dict(response.headers), body
        raise RegistryError(
            Failure.UNREACHABLE, f"more than {MAX_REDIRECTS} redirects from {self.endpoint.host}"
        )


async def read_limited(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body, up to one byte more than `limit` (so that a larger one is told apart):
    `read(n)` gives what has arrived so far, not n bytes, so an answer that comes in several
    packets needs a loop — one read would judge a correct answer "not JSON" at random."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


#: Redirects a registry client follows (each checked); what status codes mean one.
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port)


def _path(url: str) -> str:
    return urlsplit(url).path


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
        if _origin(realm) != _origin(self.endpoint.base) and not realm.startswith("https://"):
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


@contextlib.contextmanager
def transport(endpoint: Endpoint) -> Iterator[None]:
    """Network failures as the reasons a status shows; the message names the host, never
    anything sent to it."""
    try:
        yield
    except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError) as error:
        raise RegistryError(
            Failure.TLS_ERROR, f"TLS with {endpoint.host} failed: {error}"
        ) from None
    except TimeoutError:
        raise RegistryError(
            Failure.UNREACHABLE,
            f"{endpoint.host} did not answer within {endpoint.timeout:g} s",
            temporary=True,
        ) from None
    except aiohttp.ClientError as error:
        raise RegistryError(
            Failure.UNREACHABLE,
            f"cannot reach {endpoint.host}: {type(error).__name__}",
            temporary=True,
        ) from None


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


def classify(status: int, what: str) -> RegistryError:
    if status in (401, 403):
        return RegistryError(
            Failure.UNAUTHORIZED, f"{what}: the registry refused the credentials ({status})"
        )
    if status == 429 or status >= 500:
        return RegistryError(
            Failure.UNREACHABLE, f"{what}: the registry answered {status}", temporary=True
        )
    return RegistryError(Failure.UNREACHABLE, f"{what}: unexpected answer {status}")


async def gather_limited(coroutines: list[Any], limit: int = 8) -> list[Any]:
    """Run coroutines with at most `limit` at a time (the CLI verifies many versions)."""
    semaphore = asyncio.Semaphore(limit)

    async def guarded(coroutine: Any) -> Any:
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(guarded(c) for c in coroutines))
