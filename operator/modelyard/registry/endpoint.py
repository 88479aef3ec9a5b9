"""Asking a model server: a GET for its health, a POST of a sample request, the JSON it answers.

The same aiohttp session, TLS settings and failure classes as the registry clients
(`modelyard.registry.oci`): a server that does not answer in time or cannot be reached is
`Unreachable`, a certificate that is not trusted is `TLSError`. What the answer means is the
caller's to judge; the header carrying a credential is never part of a message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yarl

from modelyard.registry.http import (
    MAX_REDIRECTS,
    Endpoint,
    Failure,
    HttpClient,
    RegistryError,
    read_limited,
    transport,
)

REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Bytes of an answer read at most: a probe's answer is small, a runaway server's is not.
MAX_ANSWER = 4 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    #: The parsed JSON body; None when the body is not JSON (see `not_json`).
    body: Any = None
    not_json: str | None = None


@dataclass
class ModelEndpoint(HttpClient):
    """One model server at `endpoint.url`; paths are joined to that URL, path and all."""

    headers: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.endpoint.url.rstrip("/") + path

    async def get(self, path: str) -> Answer:
        return await self._send("GET", path, None)

    async def post(self, path: str, payload: Any) -> Answer:
        return await self._send("POST", path, payload)

    async def post_form(self, path: str, fields: Mapping[str, Any]) -> Answer:
        """POST `fields` as an HTML form: how DEEPaaS takes a model's predict arguments."""
        form = {
            name: value if isinstance(value, str) else json.dumps(value)
            for name, value in fields.items()
        }
        return await self._send("POST", path, None, form=form)

    async def _send(
        self, method: str, path: str, payload: Any, form: Mapping[str, str] | None = None
    ) -> Answer:
        headers = {"Accept": "application/json", **self.headers}
        url = self.url(path)
        with transport(self.endpoint):
            for _ in range(MAX_REDIRECTS + 1):
                body: dict[str, Any] = (
                    {"data": dict(form)} if form is not None else {"json": payload}
                )
                async with self._http().request(
                    method, url, headers=headers, allow_redirects=False, **body
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in REDIRECTS and location:
                        url = _same_origin(url, str(response.url.join(yarl.URL(location))))
                        continue
                    raw = await read_limited(response.content, MAX_ANSWER)
                    status = response.status
                    break
            else:
                raise RegistryError(
                    Failure.UNREACHABLE, f"{self.url(path)}: more than {MAX_REDIRECTS} redirects"
                )
        if len(raw) > MAX_ANSWER:
            return Answer(
                status,
                None,
                f"the answer is larger than {MAX_ANSWER // (1024 * 1024)} MiB, the most a probe "
                "reads",
            )
        try:
            return Answer(status, json.loads(raw))
        except (ValueError, UnicodeDecodeError) as error:
            return Answer(status, None, f"{type(error).__name__}: {str(error)[:200]}")


def _same_origin(current: str, target: str) -> str:
    """Follow a redirect only within the origin asked: the credentials in the headers are for
    that server, and a redirect elsewhere must not carry them (nor send the operator to an
    address the egress policy was never asked about)."""
    before, after = urlsplit(current), urlsplit(target)
    if (before.scheme, before.hostname, before.port) != (after.scheme, after.hostname, after.port):
        raise RedirectRefused(
            f"{current} redirected to another origin ({after.scheme}://{after.netloc}); "
            "the operator follows redirects only within the same origin, so credentials never "
            "leave for another server"
        )
    return target


class RedirectRefused(RegistryError):  # noqa: N818 -- a verdict, carried to the status
    def __init__(self, message: str) -> None:
        super().__init__(Failure.REDIRECTED, message)


__all__ = ["Answer", "Endpoint", "ModelEndpoint"]
