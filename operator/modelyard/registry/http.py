"""What every client of a server outside the cluster shares — OCI registries, MLflow, model
servers: an endpoint and its TLS, credentials that never show, one connection pool, redirects
followed by hand under the egress policy, bounded answers, and failures spelt as the reasons a
status shows.

Credentials never appear in an error message, a log line or anything returned.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urljoin, urlsplit

import aiohttp

from modelyard.registry.egress import EgressPolicy, NotPermitted

#: More than any manifest, signature or tag page; a larger answer is refused once one byte
#: past this has been read, never read whole.
MAX_BODY = 4 * 2**20


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
        async with self._answer(method, url, headers) as (response, final):
            body = await read_limited(response.content, limit) if method == "GET" else b""
            if len(body) > limit:
                raise RegistryError(
                    Failure.UNREACHABLE,
                    f"{self.endpoint.host} answered {method} {url_path(final)} with more than "
                    f"{limit // 2**10} KiB",
                )
            return response.status, dict(response.headers), body

    async def digest(self, url: str, headers: dict[str, str]) -> tuple[int, str, int]:
        """GET `url` (as `fetch`) and hash its body as it arrives, never holding it: the
        status, the body's SHA-256 (hex) and its size. Gigabytes take a while, so only a read
        that stalls for the endpoint's timeout fails it, not the whole download's length."""
        async with self._answer("GET", url, headers, streaming=True) as (response, _):
            hashed = hashlib.sha256()
            size = 0
            if response.status == 200:
                async for chunk in response.content.iter_chunked(2**20):
                    hashed.update(chunk)
                    size += len(chunk)
            return response.status, hashed.hexdigest(), size

    @contextlib.asynccontextmanager
    async def _answer(
        self, method: str, url: str, headers: dict[str, str], *, streaming: bool = False
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, str]]:
        """The answer to `method url` after its redirects, and the URL that gave it."""
        # A download's length is not bounded, its stalls are; other answers keep the session's
        # timeout (aiohttp reads an explicit None as no timeout at all).
        extra: dict[str, Any] = (
            {
                "timeout": aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self.endpoint.timeout,
                    sock_read=self.endpoint.timeout,
                )
            }
            if streaming
            else {}
        )
        for _hop in range(MAX_REDIRECTS + 1):
            await self.permitted(url)
            async with self._http().request(
                method, url, headers=headers, allow_redirects=False, **extra
            ) as response:
                location = response.headers.get("Location")
                if response.status in REDIRECTS and location:
                    target = urljoin(url, location)
                    if origin(target) != origin(url):
                        headers = {k: v for k, v in headers.items() if k != "Authorization"}
                    url = target
                    continue
                yield response, url
                return
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


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port)


def url_path(url: str) -> str:
    return urlsplit(url).path


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
