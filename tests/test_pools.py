"""The client's connection pools and logging in again (`modelyard.kube.pools`), without a server:
pools are made on first use, and nothing here connects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from modelyard.kube.errors import ApiError
from modelyard.kube.login import Credentials
from modelyard.kube.pools import Pools


def logins(*answers: Credentials | Exception) -> tuple[Callable[[], Credentials], list[int]]:
    """A login giving `answers` in turn (the last one again), and how often it was called."""
    calls: list[int] = []

    def login() -> Credentials:
        calls.append(1)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return login, calls


def pools(login: Callable[[], Credentials]) -> Pools:
    return Pools(login, connect_timeout=5, ping_after=30, ping_timeout=15)


async def test_calls_and_watches_have_pools_apart() -> None:
    login, _ = logins(Credentials("http://127.0.0.1:1", token="a"))
    subject = pools(login)
    calls, _ = await subject.connect()
    watches, _ = await subject.connect(watching=True)
    assert calls is not watches
    assert calls is (await subject.connect())[0]
    await subject.close()


async def test_a_burst_logs_in_once() -> None:
    login, calls = logins(Credentials("http://127.0.0.1:1", token="a"))
    subject = pools(login)
    await asyncio.gather(*(subject.connect() for _ in range(10)))
    assert len(calls) == 1
    await subject.close()


async def test_a_new_token_keeps_the_pools() -> None:
    login, _ = logins(
        Credentials("http://127.0.0.1:1", token="old"),
        Credentials("http://127.0.0.1:1", token="new"),
    )
    subject = pools(login)
    session, old = await subject.connect()
    renewed, new = await subject.connect(renew=True)
    assert (old.token, new.token) == ("old", "new")
    assert renewed is session and not session.closed
    await subject.close()


async def test_new_tls_material_replaces_the_pools() -> None:
    login, _ = logins(
        Credentials("http://127.0.0.1:1", token="a"),
        Credentials("http://127.0.0.1:1", token="a", insecure=True),
    )
    subject = pools(login)
    session, _ = await subject.connect()
    renewed, _ = await subject.connect(renew=True)
    assert renewed is not session and session.closed
    await subject.close()


async def test_credentials_that_expired_are_renewed_without_being_asked() -> None:
    login, calls = logins(
        Credentials("http://127.0.0.1:1", token="old", expires=time.monotonic() - 1),
        Credentials("http://127.0.0.1:1", token="new"),
    )
    subject = pools(login)
    await subject.connect()
    _, credentials = await subject.connect()
    assert credentials.token == "new" and len(calls) == 2
    await subject.close()


async def test_the_first_login_fails_as_it_failed() -> None:
    login, _ = logins(LookupError("no kubeconfig"))
    with pytest.raises(LookupError):
        await pools(login).connect()


async def test_a_failing_login_again_is_temporary() -> None:
    """A rotated token file gone, an exec plugin failing: retried like an unreachable server."""
    login, _ = logins(Credentials("http://127.0.0.1:1", token="a"), OSError("plugin failed"))
    subject = pools(login)
    await subject.connect()
    with pytest.raises(ApiError) as raised:
        await subject.connect(renew=True)
    assert raised.value.temporary and raised.value.reason == "LoginFailed"
    assert "plugin failed" in raised.value.message
    await subject.close()


async def test_plain_http_has_no_http2() -> None:
    login, _ = logins(Credentials("http://127.0.0.1:1"))
    subject = pools(login)
    await subject.connect()
    assert subject.watch_connections() == ("HTTP/1.1", 0)
    await subject.close()
