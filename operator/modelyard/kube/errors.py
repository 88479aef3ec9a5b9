"""The one error taxonomy the reconcilers act on: every failed API call leaves the kube package
as an `ApiError` that says whether retrying can help, so no caller reads status codes itself.

Retrying helps for a conflict, throttling, a timeout or a server in trouble (408, 409, 429, 500,
502, 503, 504) and for anything that never got an HTTP answer at all — an unreachable server, a
failed login, a body that is not JSON — which is status 0. It does not help for the rest: 422
invalid, 403 forbidden, 404 where the object must exist. `NotLeading` stands apart: it is not the
server's refusal but this process's own rule.
"""

from __future__ import annotations

import json
from typing import Any

TEMPORARY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class NotLeading(Exception):  # noqa: N818 -- a state, not a failure
    """A write asked for by a process that does not hold the leader Lease (any more).

    Raised before anything is sent: a standby, or a leader that just lost its Lease, must not
    write, or two processes would fight over the same objects. Not an `ApiError`, so no
    reconciler mistakes it for the server's refusal and reports it in a status.
    """


class ApiError(Exception):
    """A failed API call, classified once for every caller.

    `retry_after` is the server's own Retry-After (seconds), which callers prefer to their
    backoff when it is given.
    """

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def temporary(self) -> bool:
        return self.status in TEMPORARY_STATUSES or self.status == 0

    @property
    def not_found(self) -> bool:
        return self.status == 404


def json_body(payload: bytes, status: int) -> dict[str, Any]:
    """A successful answer's body; one that is not a JSON object (a proxy's error page, a
    truncated stream) is a temporary failure like an unreachable server, not a crash."""
    if not payload:
        return {}
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        shown = payload[:120].decode("utf-8", "replace")
        raise ApiError(0, "InvalidResponse", f"{status} with a body that is not JSON: {shown!r}")
    return parsed


def api_error(status: Any, reason: Any, body: Any, headers: Any) -> ApiError:
    """The `ApiError` a failed answer means, from HTTP/1.1 (aiohttp) or HTTP/2 alike.

    Kubernetes `Status` bodies carry the reason and message worth showing; a body that is not a
    JSON object (a proxy's error page) is shown as it is, cut to 500 characters.
    """
    reason, message = str(reason or ""), ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        payload = json.loads(body or "{}")
        reason = payload.get("reason") or reason
        message = payload.get("message") or ""
    except (TypeError, ValueError, AttributeError):
        message = str(body or "")[:500]
    retry_after = None
    # HTTP/2 header names are lowercase; aiohttp's lookup ignores case, a dict does not.
    value = next(
        (v for k, v in dict(headers or {}).items() if str(k).lower() == "retry-after"), None
    )
    if value:
        try:
            retry_after = float(value)
        except ValueError:
            retry_after = None
    return ApiError(int(status or 0), reason, message, retry_after)
