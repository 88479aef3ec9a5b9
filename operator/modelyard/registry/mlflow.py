"""A small client for an MLflow model registry's REST API (`/api/2.0/mlflow/...`).

Only what a Registry check, a ModelVersion's verification and `modelyard models` need: does the
server answer with these credentials, one version by number or by alias, and the registered
models with their versions. Over aiohttp like the OCI client, with the same failure reasons
(Unauthorized, Unreachable, TLSError) and the same rule: credentials never appear in an error
message, a log line or anything returned.

MLflow's own Python client is not used here: it pulls in a large dependency tree and is
synchronous, while the operator only needs four GET requests on its event loop.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from modelyard.registry.http import (
    Credentials,
    Failure,
    HttpClient,
    RegistryError,
    classify,
    transport,
)

API = "/api/2.0/mlflow"
#: MLflow's answer for a registered model, version or alias that does not exist.
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
PAGE = 100


class Status:
    """MLflow's model-version status values."""

    READY = "READY"
    PENDING = "PENDING_REGISTRATION"
    FAILED = "FAILED_REGISTRATION"


@dataclass(frozen=True)
class RegisteredVersion:
    """One model version as MLflow describes it."""

    name: str
    version: str
    status: str
    run_id: str | None
    source: str | None
    created_time: str | None
    aliases: tuple[str, ...] = ()

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @classmethod
    def from_api(cls, payload: dict[str, Any]) -> RegisteredVersion:
        created = payload.get("creation_timestamp")
        return cls(
            name=str(payload.get("name", "")),
            version=str(payload.get("version", "")),
            status=str(payload.get("status") or Status.READY),
            run_id=payload.get("run_id") or None,
            source=payload.get("source") or None,
            created_time=_rfc3339(created) if created is not None else None,
            aliases=tuple(payload.get("aliases") or ()),
        )


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    aliases: dict[str, str]
    versions: list[RegisteredVersion] = field(default_factory=list)


def _rfc3339(milliseconds: Any) -> str | None:
    try:
        moment = datetime.datetime.fromtimestamp(int(milliseconds) / 1000, tz=datetime.UTC)
    except (TypeError, ValueError, OverflowError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def authorization(credentials: Credentials) -> str | None:
    """The Authorization header MLflow takes: a bearer token, else basic auth, else none."""
    if credentials.token:
        return f"Bearer {credentials.token}"
    if credentials.anonymous:
        return None
    return credentials.basic()


@dataclass
class MlflowClient(HttpClient):
    """One MLflow server, one set of credentials; reuse it (it keeps its connections)."""

    async def _get(self, path: str, query: dict[str, str]) -> dict[str, Any] | None:
        """The answer's JSON; None when MLflow says the thing asked for does not exist."""
        url = self.endpoint.url.rstrip("/") + API + path
        if query:
            url += "?" + urlencode(query)
        headers = {"Accept": "application/json"}
        header = authorization(self.credentials)
        if header:
            headers["Authorization"] = header
        with transport(self.endpoint):
            status, _, body = await self.fetch("GET", url, headers)
        if status == 200:
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                raise RegistryError(
                    Failure.UNREACHABLE, f"{self.endpoint.host} answered {path} with no JSON"
                ) from None
            return payload if isinstance(payload, dict) else {}
        if status in (400, 404) and _error_code(body) in NOT_FOUND_CODES:
            return None
        raise classify(status, f"MLflow {path}")

    async def ping(self) -> None:
        """Reachable, TLS trusted, and the credentials accepted by the model registry."""
        await self._get("/registered-models/search", {"max_results": "1"})

    async def version(self, name: str, number: str) -> RegisteredVersion | None:
        payload = await self._get("/model-versions/get", {"name": name, "version": number})
        if payload is None or "model_version" not in payload:
            return None
        return RegisteredVersion.from_api(payload["model_version"])

    async def by_alias(self, name: str, alias: str) -> RegisteredVersion | None:
        payload = await self._get("/registered-models/alias", {"name": name, "alias": alias})
        if payload is None or "model_version" not in payload:
            return None
        return RegisteredVersion.from_api(payload["model_version"])

    async def models(self) -> list[RegisteredModel]:
        """Every registered model, with its aliases and all its versions (newest first)."""
        found: list[RegisteredModel] = []
        token = ""
        while True:
            query = {"max_results": str(PAGE)}
            if token:
                query["page_token"] = token
            payload = await self._get("/registered-models/search", query) or {}
            for model in payload.get("registered_models") or []:
                aliases = {
                    str(a.get("alias")): str(a.get("version")) for a in model.get("aliases") or []
                }
                found.append(RegisteredModel(str(model.get("name")), aliases))
            token = payload.get("next_page_token") or ""
            if not token:
                break
        for model in found:
            model.versions.extend(await self.versions(model.name))
        return found

    async def versions(self, name: str) -> list[RegisteredVersion]:
        escaped = name.replace("'", "\\'")
        versions: list[RegisteredVersion] = []
        token = ""
        while True:
            query = {"filter": f"name='{escaped}'", "max_results": str(PAGE)}
            if token:
                query["page_token"] = token
            payload = await self._get("/model-versions/search", query) or {}
            versions.extend(
                RegisteredVersion.from_api(v) for v in payload.get("model_versions") or []
            )
            token = payload.get("next_page_token") or ""
            if not token:
                break
        return sorted(versions, key=lambda v: int(v.version or 0), reverse=True)


def _error_code(body: bytes) -> str | None:
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return None
    return payload.get("error_code") if isinstance(payload, dict) else None
