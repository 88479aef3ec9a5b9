"""One watch's events as they come, over HTTP/2 (a stream of `modelyard.kube.http2`) or HTTP/1.1
(a connection of its own), and every way a watch can end that is not the server ending it, said
as an `ApiError`: nothing came for too long, the server cannot be reached, it refused.

A watch's body is one JSON event per line. Lines are split here (`iter_lines`) rather than by
aiohttp's readline, whose 64 KiB limit a large object (a pod with a long status) can exceed, and
the same splitter serves both transports. Logging in and choosing the transport are the client's
(`Kube.watch`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any
from urllib.parse import urlencode

import aiohttp

from modelyard.kube import http2
from modelyard.kube.errors import ApiError, api_error, json_body


class Unauthorized(Exception):  # noqa: N818 -- a signal to the client, not a failure
    """A watch answered 401 and the caller asked to be told: it logs in again, once."""


async def iter_lines(chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
    """The non-blank lines of a body arriving in `chunks` cut anywhere, without their newline.

    A line is yielded once its newline came. What follows the last newline when the body ends
    is dropped: the server ends every event with one, so that is an event the connection cut
    short, and the watch resumes from the last event it did get.

    A chunk without a newline is only kept, not joined: a large object arriving in many small
    chunks costs time in its size, not in its size squared.
    """
    pending: list[bytes] = []
    async for chunk in chunks:
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        *lines, rest = b"".join((*pending, chunk)).split(b"\n")
        pending = [rest] if rest else []
        for line in lines:
            if line.strip():
                yield line


async def events_over_http1(
    session: aiohttp.ClientSession,
    url: str,
    query: dict[str, str],
    headers: dict[str, str],
    *,
    connect_timeout: float,
    idle: float | None,
    relogin: bool,
) -> AsyncGenerator[dict[str, Any], None]:
    """A watch on a connection of `session`'s; `Unauthorized` on a 401 when `relogin`, an
    `ApiError` from the answer's body on any other failed status."""
    try:
        async with session.get(
            url,
            params={**query, "watch": "true"},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=idle),
        ) as response:
            if response.status == 401 and relogin:
                raise Unauthorized
            if response.status != 200:
                payload = await response.read()
                raise api_error(response.status, response.reason, payload, response.headers)
            async for line in iter_lines(response.content.iter_any()):
                yield json_body(line, response.status)
    except TimeoutError as error:
        if isinstance(error, aiohttp.ConnectionTimeoutError):
            raise ApiError(0, "Unreachable", "timed out connecting") from None
        raise ApiError(0, "Silent", f"nothing came for {idle} s") from None
    except aiohttp.ClientError as error:
        raise ApiError(0, "Unreachable", str(error) or type(error).__name__) from None


async def events_over_http2(
    streams: http2.Pool,
    url: str,
    query: dict[str, str],
    headers: dict[str, str],
    *,
    answer_timeout: float,
    idle: float | None,
    relogin: bool,
) -> AsyncGenerator[dict[str, Any], None]:
    """A watch as a stream of one of `streams`' connections; `Unauthorized` on a 401 when
    `relogin`. `http2.Unavailable` when the server does not speak HTTP/2 (nothing was sent:
    the caller watches over HTTP/1.1 instead).

    A GOAWAY after the answer began ends the watch as the server ending it would: the server
    drains the connection, and the caller resumes on another."""
    target = f"{url}?{urlencode({**query, 'watch': 'true'})}"
    # HTTP/2 header names are lowercase.
    lowercase = {name.lower(): value for name, value in headers.items()}
    try:
        stream = await streams.stream(target, lowercase)
    except http2.StreamError as error:
        raise ApiError(0, "Unreachable", str(error)) from None
    try:
        try:
            await asyncio.wait_for(stream.answered(), answer_timeout)
        except TimeoutError:
            raise ApiError(0, "Unreachable", "no answer to the watch") from None
        if stream.status == 401:
            if relogin:
                raise Unauthorized
            raise ApiError(401, "Unauthorized", "the API server refused the credentials")
        if stream.status != 200:
            try:
                payload = await asyncio.wait_for(stream.read(), answer_timeout)
            except TimeoutError:
                payload = b""
            raise api_error(stream.status, "", payload, stream.headers)
        async for line in iter_lines(stream.body(idle)):
            yield json_body(line, stream.status)
    except TimeoutError:
        raise ApiError(0, "Silent", f"nothing came for {idle} s") from None
    except http2.GoingAway as error:
        if stream.status == 200:
            return  # the server drains the connection: the caller resumes, on another
        raise ApiError(0, "Unreachable", str(error)) from None
    except http2.StreamError as error:
        raise ApiError(0, "Unreachable", str(error)) from None
    finally:
        stream.close()
