"""Asking a model server: a GET for its health, a POST of a sample request, the JSON it answers.

The same aiohttp session, TLS settings and failure classes as the registry clients
(`modelyard.registry.oci`): a server that does not answer in time or cannot be reached is
`Unreachable`, a certificate that is not trusted is `TLSError`. What the answer means is the
caller's to judge; the header carrying a credential is never part of a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from modelyard.registry.oci import Endpoint, HttpClient, transport

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

    async def _send(self, method: str, path: str, payload: Any) -> Answer:
        headers = {"Accept": "application/json", **self.headers}
        with transport(self.endpoint):
            async with self._http().request(
                method, self.url(path), json=payload, headers=headers, allow_redirects=True
            ) as response:
                raw = await response.content.read(MAX_ANSWER)
                status = response.status
        try:
            return Answer(status, json.loads(raw))
        except (ValueError, UnicodeDecodeError) as error:
            return Answer(status, None, f"{type(error).__name__}: {str(error)[:200]}")


__all__ = ["Answer", "Endpoint", "ModelEndpoint"]
