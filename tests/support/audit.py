"""The API server's own record of who wrote what: its audit log, read as it grows.

The test control planes log, at Metadata level, every write by the operator's service accounts
(and the benchmark adds its own rules): the time the server received it, the user, and the
User-Agent, which names the operator process (`modelyard/<pod>_<id>`), so two replicas under
one service account are told apart by the server itself, not by anything they report.
"""

from __future__ import annotations

import calendar
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

#: Every write by a service account of the operator's namespace: what the tests ask of it.
OPERATOR_WRITES_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Metadata",
            "userGroups": ["system:serviceaccounts:modelyard-system"],
            "verbs": sorted(WRITE_VERBS),
        },
        {"level": "None"},
    ],
}


def stamp(text: str) -> float:
    """RFC 3339 with microseconds → seconds since the epoch."""
    seconds, _, fraction = text.rstrip("Z").partition(".")
    whole = calendar.timegm(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S"))
    return whole + float(f"0.{fraction or 0}")


@dataclass(frozen=True)
class Request:
    at: float
    user: str
    agent: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int


def server_args(policy_path: Path, log_path: Path) -> list[str]:
    """tests/cluster arguments that turn the audit log on."""
    return [
        f"--apiserver-arg=--audit-policy-file={policy_path}",
        f"--apiserver-arg=--audit-log-path={log_path}",
        "--apiserver-arg=--audit-log-format=json",
        "--apiserver-arg=--audit-log-maxsize=0",
    ]


class AuditLog:
    """The API server's audit log, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[Request] = []
        self._offset = 0

    def read(self) -> list[Request]:
        if not self.path.exists():
            return self.requests
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete":
                continue  # a watch also logs ResponseStarted; count each request once
            ref = event.get("objectRef") or {}
            self.requests.append(
                Request(
                    at=stamp(event["requestReceivedTimestamp"]),
                    user=event["user"]["username"],
                    agent=event.get("userAgent", ""),
                    verb=event["verb"],
                    resource=ref.get("resource", ""),
                    subresource=ref.get("subresource", ""),
                    namespace=ref.get("namespace", ""),
                    name=ref.get("name", ""),
                    code=int((event.get("responseStatus") or {}).get("code", 0)),
                )
            )
        return self.requests
